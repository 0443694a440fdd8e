package peregrine.peer;

import java.io.IOException;
import java.time.Duration;
import javax.servlet.Filter;
import javax.servlet.FilterChain;
import javax.servlet.ServletException;
import javax.servlet.ServletRequest;
import javax.servlet.ServletResponse;

/** Gives each request a deadline of {@code timeout} from now; see {@link RequestDeadline}. */
final class RequestDeadlineFilter implements Filter {
    private final long timeoutNanos;

    RequestDeadlineFilter(Duration timeout) {
        this.timeoutNanos = timeout.toNanos();
    }

    @Override
    public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
            throws IOException, ServletException {
        RequestDeadline.set(request, System.nanoTime() + timeoutNanos);
        chain.doFilter(request, response);
    }
}
