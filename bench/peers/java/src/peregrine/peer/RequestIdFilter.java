package peregrine.peer;

import java.io.IOException;
import java.util.UUID;
import javax.servlet.Filter;
import javax.servlet.FilterChain;
import javax.servlet.ServletException;
import javax.servlet.ServletRequest;
import javax.servlet.ServletResponse;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;

/** Reads X-Request-Id or generates a UUID, keeps it as a request attribute and echoes it. */
final class RequestIdFilter implements Filter {
    static final String HEADER = "X-Request-Id";
    static final String ATTRIBUTE = RequestIdFilter.class.getName();

    @Override
    public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
            throws IOException, ServletException {
        String requestId = ((HttpServletRequest) request).getHeader(HEADER);
        if (requestId == null || requestId.isEmpty()) {
            requestId = UUID.randomUUID().toString();
        }
        request.setAttribute(ATTRIBUTE, requestId);
        ((HttpServletResponse) response).setHeader(HEADER, requestId);
        chain.doFilter(request, response);
    }

    static String get(ServletRequest request) {
        return (String) request.getAttribute(ATTRIBUTE);
    }
}
