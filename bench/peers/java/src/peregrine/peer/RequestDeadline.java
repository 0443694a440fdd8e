package peregrine.peer;

import javax.servlet.ServletRequest;

/**
 * The time by which a request must have its response, kept as a request attribute. Jetty
 * cannot interrupt a servlet that blocks, so each step that may block limits itself to the
 * time that is left.
 */
final class RequestDeadline {
    private static final String ATTRIBUTE = RequestDeadline.class.getName();

    private RequestDeadline() {}

    static void set(ServletRequest request, long deadlineNanos) {
        request.setAttribute(ATTRIBUTE, deadlineNanos);
    }

    /** Returns the nanoseconds left, negative once the deadline has passed. */
    static long remainingNanos(ServletRequest request) {
        Object deadline = request.getAttribute(ATTRIBUTE);
        if (deadline == null) {
            throw new IllegalStateException("RequestDeadlineFilter did not run for this request");
        }
        return (Long) deadline - System.nanoTime();
    }

    static boolean hasPassed(ServletRequest request) {
        return remainingNanos(request) <= 0;
    }
}
