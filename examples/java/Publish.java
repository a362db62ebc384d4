// Publishing from a Java service on the JDK alone (java.net.http), as a
// Spring service's component would call the hub: one user (every tab of
// theirs), a group (every user whose id starts with a prefix), a topic.
// Run: PUSHWIRE_URL=http://127.0.0.1:8080 PUSHWIRE_KEY=... java Publish.java
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class Publish {
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private final String hub;
    private final String key;

    Publish(String hub, String key) {
        this.hub = hub;
        this.key = key;
    }

    /** Publishes one event (JSON as the hub's API reads it); returns the answer, {"id": ...}. */
    String publish(String eventJson) throws IOException, InterruptedException {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(hub + "/api/v1/publish"))
                .timeout(Duration.ofSeconds(10))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(eventJson));
        if (key != null) {
            request.header("Authorization", "Bearer " + key);
        }
        HttpResponse<String> response = http.send(request.build(), HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            // {"error": {"code", "message"}}: nothing was stored.
            throw new IOException("pushwire refused the event: " + response.body());
        }
        return response.body();
    }

    /** The id out of {"id":"..."}; a JSON library would do this in a real service. */
    static String id(String answer) {
        int start = answer.indexOf("\"id\":\"") + 6;
        return answer.substring(start, answer.indexOf('"', start));
    }

    public static void main(String[] args) throws Exception {
        Publish hub = new Publish(
                System.getenv().getOrDefault("PUSHWIRE_URL", "http://127.0.0.1:8080"),
                System.getenv("PUSHWIRE_KEY"));
        System.out.println(id(hub.publish(
                "{\"to\": {\"users\": [\"alice\"]}, \"event\": \"order\", \"data\": \"order 42 shipped\"}")));
        System.out.println(id(hub.publish("{\"to\": {\"user_prefix\": \"team-7/\"}, \"data\": \"standup in 5\"}")));
        System.out.println(id(hub.publish("{\"to\": {\"topics\": [\"prices/EURCNY\"]}, \"data\": {\"bid\": 7.81}}")));
    }
}
