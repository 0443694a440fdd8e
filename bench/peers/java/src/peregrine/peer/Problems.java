package peregrine.peer;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.Map;
import javax.servlet.http.HttpServletResponse;

/** Writes RFC 9457 problem details bodies. */
final class Problems {
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final Map<Integer, String> TITLES = Map.of(
            400, "Bad Request",
            404, "Not Found",
            500, "Internal Server Error",
            503, "Service Unavailable",
            504, "Gateway Timeout");

    private Problems() {}

    static void send(HttpServletResponse response, int status, String detail) throws IOException {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("type", "about:blank");
        body.put("title", TITLES.getOrDefault(status, "Error"));
        body.put("status", status);
        body.put("detail", detail);
        byte[] json = MAPPER.writeValueAsBytes(body);

        response.setStatus(status);
        response.setContentType("application/problem+json");
        response.setContentLength(json.length);
        response.getOutputStream().write(json);
    }
}
