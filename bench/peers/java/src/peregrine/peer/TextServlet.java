package peregrine.peer;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;

/** Serves GET with a fixed plain-text body: the hello and liveness routes. */
final class TextServlet extends HttpServlet {
    private static final long serialVersionUID = 1L;

    private final byte[] body;

    TextServlet(String body) {
        this.body = body.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
        response.setContentType("text/plain; charset=utf-8");
        response.setContentLength(body.length);
        response.getOutputStream().write(body);
    }
}
