// The endpoint pushwire's --auth-url calls before it opens a stream, on the
// JDK's own HTTP server: it reads the application's session cookie that
// pushwire forwards and answers for the session (a Spring service would
// read its HttpSession instead; see docs/integration.md).
// Run: SESSIONS='{"s3cr3t": "alice"}' PORT=3000 java AuthBackend.java
// and start the hub with --auth-url http://127.0.0.1:3000/pushwire/auth
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class AuthBackend {
    /** The forwarded cookie header in pushwire's request: {"headers": {"cookie": "..."}}. */
    private static final Pattern PAIR = Pattern.compile("\"([^\"]*)\"\\s*:\\s*\"([^\"]*)\"");
    private static final Pattern COOKIE = Pattern.compile("\"cookie\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"");

    public static void main(String[] args) throws IOException {
        // Session id -> user id, from a flat JSON object of strings.
        Map<String, String> sessions = new HashMap<>();
        Matcher pair = PAIR.matcher(System.getenv().getOrDefault("SESSIONS", "{}"));
        while (pair.find()) {
            sessions.put(pair.group(1), pair.group(2));
        }
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "3000"));
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 0);
        server.createContext("/pushwire/auth", exchange -> answer(exchange, sessions));
        server.start();
        System.out.println("listening on 127.0.0.1:" + port);
    }

    private static void answer(HttpExchange exchange, Map<String, String> sessions) throws IOException {
        String ask = new String(exchange.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
        String user = null;
        Matcher cookie = COOKIE.matcher(ask);
        if ("POST".equals(exchange.getRequestMethod()) && cookie.find()) {
            for (String part : cookie.group(1).split(";")) {
                String[] kv = part.trim().split("=", 2);
                if (kv.length == 2 && kv[0].equals("session")) {
                    user = sessions.get(kv[1]);
                }
            }
        }
        if (user == null) {
            exchange.sendResponseHeaders(401, -1);
            exchange.close();
            return;
        }
        byte[] body = ("{\"user\": \"" + user + "\", \"topics\": [\"news\", \"orders/" + user
                + "/*\"], \"expires_in\": 3600}").getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        exchange.sendResponseHeaders(200, body.length);
        exchange.getResponseBody().write(body);
        exchange.close();
    }
}
