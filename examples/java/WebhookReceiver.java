// The endpoint pushwire's --webhook-url posts to, on the JDK's own HTTP
// server: it verifies each message (Standard Webhooks: the webhook-id,
// webhook-timestamp and webhook-signature headers), acts on it once, and
// answers 204 quickly. receive() is what a Spring service's controller
// method would be: @PostMapping("/webhooks") taking
// @RequestHeader(name = "webhook-id", required = false) String id (and the
// other two) and @RequestBody byte[] body, the raw bytes, since the
// signature covers them exactly as sent; it would read the verified body
// with Jackson's ObjectMapper, where this file has its few lines of Json.
// Run: PUSHWIRE_WEBHOOK_SECRET=whsec_... PORT=3000 java WebhookReceiver.java
// and start the hub with --webhook-url http://127.0.0.1:3000/webhooks
// and the same --webhook-secret.
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class WebhookReceiver {
    /** Seconds between the hub's clock and ours. */
    private static final long TOLERANCE = 5 * 60;
    private static final PrintStream OUT =
            new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

    private final SecretKeySpec key;
    /**
     * The ids already handled. The hub sends a message again until it gets a
     * 2xx, with the same webhook-id: an application keeps these in its
     * database (a unique key), for longer than the hub retries.
     */
    private final Set<String> handled = ConcurrentHashMap.newKeySet();

    WebhookReceiver(byte[] key) {
        this.key = new SecretKeySpec(key, "HmacSHA256");
    }

    public static void main(String[] args) throws IOException {
        String secret = System.getenv().getOrDefault("PUSHWIRE_WEBHOOK_SECRET", "");
        byte[] key = null;
        try {
            if (secret.startsWith("whsec_")) {
                key = Base64.getDecoder().decode(secret.substring("whsec_".length()));
            }
        } catch (IllegalArgumentException notBase64) {
            key = null;
        }
        if (key == null) {
            System.err.println("PUSHWIRE_WEBHOOK_SECRET must be whsec_<base64>");
            System.exit(2);
        }
        WebhookReceiver receiver = new WebhookReceiver(key);
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "3000"));
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 0);
        server.createContext("/webhooks", exchange -> answer(exchange, receiver));
        server.start();
        OUT.println("listening on 127.0.0.1:" + server.getAddress().getPort());
    }

    /** What Spring does around a controller: extract, call, send the status. */
    private static void answer(HttpExchange exchange, WebhookReceiver receiver) throws IOException {
        byte[] body = exchange.getRequestBody().readAllBytes();
        int status = 404;
        if ("POST".equals(exchange.getRequestMethod()) && exchange.getRequestURI().getPath().equals("/webhooks")) {
            status = receiver.receive(
                    exchange.getRequestHeaders().getFirst("webhook-id"),
                    exchange.getRequestHeaders().getFirst("webhook-timestamp"),
                    exchange.getRequestHeaders().getFirst("webhook-signature"),
                    body);
        }
        exchange.sendResponseHeaders(status, -1);
        exchange.close();
    }

    /** The controller method: the status to answer. */
    int receive(String id, String timestamp, String signatures, byte[] body) {
        if (id == null || timestamp == null || signatures == null) {
            return 400;
        }
        if (!timestamp.matches("[0-9]{1,18}")
                || Math.abs(System.currentTimeMillis() / 1000 - Long.parseLong(timestamp)) > TOLERANCE
                || !verified(id, timestamp, signatures, body)) {
            return 401;
        }
        Map<String, String> message;
        try {
            message = Json.fields(new String(body, StandardCharsets.UTF_8));
        } catch (RuntimeException notJson) {
            return 400;
        }
        // Recorded before acting, as an insert under a unique key would be,
        // so that two deliveries of one id at once are not both acted on.
        if (!handled.add(id)) {
            return 204; // a retry of a message already handled
        }
        String type = message.getOrDefault("type", "null");
        String data = message.getOrDefault("data", "null");
        try {
            act(Json.unquote(type), data);
        } catch (RuntimeException failed) {
            handled.remove(id); // not handled: the hub sends it again
            return 500;
        }
        OUT.println("{\"id\": " + Json.quote(id) + ", \"type\": " + type + ", \"data\": " + data + "}");
        OUT.flush();
        return 204;
    }

    /** Whether one of the space-separated "v1,<base64>" signatures is ours. */
    private boolean verified(String id, String timestamp, String signatures, byte[] body) {
        byte[] expected;
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(key);
            mac.update((id + "." + timestamp + ".").getBytes(StandardCharsets.UTF_8));
            expected = Base64.getEncoder().encode(mac.doFinal(body));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
        for (String entry : signatures.split(" ")) {
            if (entry.startsWith("v1,")
                    && MessageDigest.isEqual(entry.substring(3).getBytes(StandardCharsets.UTF_8), expected)) {
                return true;
            }
        }
        return false;
    }

    /**
     * Where the application acts; data is the message's JSON text. Anything
     * slow (an e-mail, a mobile push) goes to a job queue: the hub waits for
     * the answer and retries on a timeout.
     */
    private void act(String type, String data) {
        switch (type) {
            case "user.online": // {user}
                break;
            case "user.offline": // {user}
                break;
            case "stream.opened": // {user (or null), route, stream}
                break;
            case "stream.closed": // {user, route, stream, reason, duration_ms}
                break;
            case "event.undelivered": // {event: {id, type, data, truncated}, users}
                // These users did not get the event: send them an e-mail or a mobile push.
                break;
            default:
                break;
        }
    }

    /**
     * The top-level fields of a JSON object, each value as its JSON text
     * with the whitespace between tokens left out. Not a validating parser:
     * it reads messages whose signature has been checked.
     */
    static final class Json {
        private final String text;
        private int at;

        private Json(String text) {
            this.text = text;
        }

        static Map<String, String> fields(String text) {
            Json json = new Json(text);
            Map<String, String> fields = new HashMap<>();
            json.expect('{');
            if (json.peek() == '}') {
                json.at++;
                return fields;
            }
            do {
                String name = json.value();
                json.expect(':');
                fields.put(unquote(name), json.value());
            } while (json.next() == ',');
            return fields;
        }

        /** A JSON string without its quotes (the names and types here have no escapes). */
        static String unquote(String value) {
            if (value.length() < 2 || value.charAt(0) != '"') {
                return value;
            }
            return value.substring(1, value.length() - 1);
        }

        static String quote(String value) {
            StringBuilder out = new StringBuilder("\"");
            for (char c : value.toCharArray()) {
                if (c == '"' || c == '\\') {
                    out.append('\\').append(c);
                } else if (c < 0x20) {
                    out.append(String.format("\\u%04x", (int) c));
                } else {
                    out.append(c);
                }
            }
            return out.append('"').toString();
        }

        private char peek() {
            while (Character.isWhitespace(text.charAt(at))) {
                at++;
            }
            return text.charAt(at);
        }

        private char next() {
            char c = peek();
            at++;
            return c;
        }

        private void expect(char c) {
            if (next() != c) {
                throw new IllegalArgumentException("expected " + c + " at " + at);
            }
        }

        /** One value (a string, a number, a literal, an object, an array). */
        private String value() {
            StringBuilder out = new StringBuilder();
            int depth = 0;
            do {
                char c = peek();
                int start = at;
                if (c == '"') {
                    at++;
                    while (text.charAt(at) != '"') {
                        at += text.charAt(at) == '\\' ? 2 : 1;
                    }
                    at++;
                } else if (c == '{' || c == '[') {
                    depth++;
                    at++;
                } else if (c == '}' || c == ']' || c == ',' || c == ':') {
                    if (depth == 0) {
                        throw new IllegalArgumentException("unexpected " + c + " at " + at);
                    }
                    depth -= c == '}' || c == ']' ? 1 : 0;
                    at++;
                } else {
                    while (at < text.length() && "{}[],:\" \t\r\n".indexOf(text.charAt(at)) < 0) {
                        at++;
                    }
                }
                out.append(text, start, at);
            } while (depth > 0);
            return out.toString();
        }
    }
}
