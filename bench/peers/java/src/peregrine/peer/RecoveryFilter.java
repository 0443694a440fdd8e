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

/**
 * Sends a 500 problem body for an exception that a servlet threw, and logs the exception
 * with its stack trace. An IOException, usually a client that went away, passes through.
 */
final class RecoveryFilter implements Filter {
    private static final Logger LOG = LoggerFactory.getLogger(RecoveryFilter.class);

    @Override
    public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
            throws IOException, ServletException {
        try {
            chain.doFilter(request, response);
        } catch (RuntimeException | ServletException e) {
            HttpServletRequest http = (HttpServletRequest) request;
            LOG.error("[{}] {} {} failed", RequestIdFilter.get(request), http.getMethod(),
                    http.getRequestURI(), e);
            if (response.isCommitted()) {
                throw e;
            }
            response.resetBuffer();
            Problems.send((HttpServletResponse) response, 500, "the server failed to handle the request");
        }
    }
}
