package peregrine.peer;

import java.io.IOException;
import java.net.InetAddress;
import java.net.UnknownHostException;
import javax.servlet.Filter;
import javax.servlet.FilterChain;
import javax.servlet.ServletException;
import javax.servlet.ServletRequest;
import javax.servlet.ServletResponse;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletRequestWrapper;

/**
 * Replaces the remote address with the client's from X-Real-IP, or else the first entry of
 * X-Forwarded-For. The headers are trusted only from a loopback peer, a local proxy.
 */
final class RealIpFilter implements Filter {
    @Override
    public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
            throws IOException, ServletException {
        HttpServletRequest http = (HttpServletRequest) request;
        String clientIp = isLoopback(http.getRemoteAddr()) ? forwardedClientIp(http) : null;
        chain.doFilter(clientIp == null ? request : new ClientIpRequest(http, clientIp), response);
    }

    private static String forwardedClientIp(HttpServletRequest request) {
        String realIp = request.getHeader("X-Real-IP");
        if (realIp != null && !realIp.isBlank()) {
            return realIp.strip();
        }
        String forwardedFor = request.getHeader("X-Forwarded-For");
        if (forwardedFor != null && !forwardedFor.isBlank()) {
            int comma = forwardedFor.indexOf(',');
            return (comma == -1 ? forwardedFor : forwardedFor.substring(0, comma)).strip();
        }
        return null;
    }

    private static boolean isLoopback(String address) {
        try {
            // An IP literal is parsed without a DNS lookup.
            return InetAddress.getByName(address).isLoopbackAddress();
        } catch (UnknownHostException e) {
            return false;
        }
    }

    private static final class ClientIpRequest extends HttpServletRequestWrapper {
        private final String clientIp;

        ClientIpRequest(HttpServletRequest request, String clientIp) {
            super(request);
            this.clientIp = clientIp;
        }

        @Override
        public String getRemoteAddr() {
            return clientIp;
        }

        @Override
        public String getRemoteHost() {
            return clientIp;
        }
    }
}
