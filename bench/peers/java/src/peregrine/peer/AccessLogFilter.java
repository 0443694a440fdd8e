package peregrine.peer;

import java.io.IOException;
import javax.servlet.Filter;
import javax.servlet.FilterChain;
import javax.servlet.ServletException;
import javax.servlet.ServletRequest;
import javax.servlet.ServletResponse;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Logs method, path, status, latency, request id and client address of each request. */
final class AccessLogFilter implements Filter {
    private static final Logger LOG = LoggerFactory.getLogger("peer.access");

    @Override
    public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
            throws IOException, ServletException {
        long started = System.nanoTime();
        HttpServletRequest http = (HttpServletRequest) request;
        // An exception that escapes RecoveryFilter reaches Jetty, which sends a 500.
        int status = 500;
        try {
            chain.doFilter(request, response);
            status = ((HttpServletResponse) response).getStatus();
        } finally {
            double latencyMillis = (System.nanoTime() - started) / 1e6;
            LOG.info(String.format("%s %s %d %.3f ms request_id=%s client=%s",
                    http.getMethod(), http.getRequestURI(), status, latencyMillis,
                    RequestIdFilter.get(request), http.getRemoteAddr()));
        }
    }
}
