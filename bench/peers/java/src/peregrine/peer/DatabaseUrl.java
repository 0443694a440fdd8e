package peregrine.peer;

import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;

/** A {@code postgres://} URL split into the JDBC URL and credentials that HikariCP takes. */
record DatabaseUrl(String jdbcUrl, String user, String password) {
    private static final int DEFAULT_PORT = 5432;

    /**
     * Parses {@code postgres://user[:password]@host[:port]/db[?params]}. The query
     * parameters pass through to pgjdbc, which reads libpq names such as sslmode.
     */
    static DatabaseUrl parse(String text) {
        URI uri;
        try {
            uri = new URI(text);
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException("DATABASE_URL is not a valid URL: " + e.getMessage());
        }
        String scheme = uri.getScheme();
        if (!"postgres".equals(scheme) && !"postgresql".equals(scheme)) {
            throw new IllegalArgumentException(
                    "DATABASE_URL must start with postgres:// or postgresql://, got scheme " + scheme);
        }
        if (uri.getHost() == null) {
            throw new IllegalArgumentException("DATABASE_URL has no host");
        }

        int port = uri.getPort() == -1 ? DEFAULT_PORT : uri.getPort();
        String path = uri.getRawPath() == null ? "/" : uri.getRawPath();
        String query = uri.getRawQuery() == null ? "" : "?" + uri.getRawQuery();
        String jdbcUrl = "jdbc:postgresql://" + uri.getHost() + ":" + port + path + query;

        String user = null;
        String password = null;
        String userInfo = uri.getRawUserInfo();
        if (userInfo != null) {
            int colon = userInfo.indexOf(':');
            user = decode(colon == -1 ? userInfo : userInfo.substring(0, colon));
            password = colon == -1 ? null : decode(userInfo.substring(colon + 1));
        }
        return new DatabaseUrl(jdbcUrl, user, password);
    }

    /** Percent-decodes URL user info, where a plus sign is literal, unlike in a form. */
    private static String decode(String text) {
        return URLDecoder.decode(text.replace("+", "%2B"), StandardCharsets.UTF_8);
    }

    /** Keeps the password out of logs and exception messages. */
    @Override
    public String toString() {
        return "DatabaseUrl[jdbcUrl=" + jdbcUrl + ", user=" + user + "]";
    }
}
