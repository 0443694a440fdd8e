package peregrine.peer;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.concurrent.TimeUnit;
import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Serves {@code GET /api/v1/users/{id}} from the users table. */
final class UserServlet extends HttpServlet {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(UserServlet.class);

    // pgjdbc sends the ? placeholder to PostgreSQL as $1, and after five executions on a
    // connection it keeps the statement prepared on the server.
    private static final String SELECT_USER = "SELECT id, name, email, created_at FROM users WHERE id = ?";

    /** RFC 3339 in UTC with the microsecond precision of timestamptz, as every peer sends it. */
    private static final DateTimeFormatter CREATED_AT_FORMAT =
            DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSSSSS'Z'");

    // Jackson would otherwise put the renamed created_at first.
    @JsonPropertyOrder({"id", "name", "email", "created_at"})
    record User(
            long id,
            String name,
            String email,
            @JsonProperty("created_at") String createdAt) {}

    private final transient DataSource dataSource;
    private final transient ObjectMapper mapper;

    UserServlet(DataSource dataSource, ObjectMapper mapper) {
        this.dataSource = dataSource;
        this.mapper = mapper;
    }

    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
        String rawId = userIdSegment(request.getPathInfo());
        if (rawId == null) {
            Problems.send(response, 404, "no route for " + request.getRequestURI());
            return;
        }
        long id = parseUserId(rawId);
        if (id < 1) {
            Problems.send(response, 400, "user id must be a positive 64-bit integer, got \"" + rawId + "\"");
            return;
        }

        User user;
        try {
            user = findUser(request, id);
        } catch (SQLException e) {
            if (RequestDeadline.hasPassed(request)) {
                Problems.send(response, 504, "the request took longer than "
                        + Main.REQUEST_TIMEOUT.toSeconds() + " s");
                return;
            }
            LOG.warn("[{}] query user {} failed: {} (SQLState {})", RequestIdFilter.get(request), id,
                    e.getMessage(), e.getSQLState());
            Problems.send(response, 503, "the database is unavailable");
            return;
        }
        if (user == null) {
            Problems.send(response, 404, "no user with id " + id);
            return;
        }

        byte[] json = mapper.writeValueAsBytes(user);
        response.setContentType("application/json");
        response.setContentLength(json.length);
        response.getOutputStream().write(json);
    }

    /** Returns the id segment of the path after /api/v1/users, or null if there is not one. */
    private static String userIdSegment(String pathInfo) {
        if (pathInfo == null || pathInfo.length() < 2 || pathInfo.indexOf('/', 1) != -1) {
            return null;
        }
        return pathInfo.substring(1);
    }

    /** Returns the id, or 0 unless the text is a positive 64-bit integer. */
    private static long parseUserId(String text) {
        try {
            return Long.parseLong(text);
        } catch (NumberFormatException e) {
            return 0;
        }
    }

    /**
     * Reads one user, or returns null. HikariCP waits at most its connectionTimeout for a
     * connection, and the query gets the time left before the request deadline.
     */
    private User findUser(HttpServletRequest request, long id) throws SQLException {
        try (Connection connection = dataSource.getConnection();
                PreparedStatement statement = connection.prepareStatement(SELECT_USER)) {
            // NOTE: JDBC query timeouts are whole seconds, so the query may run up to a second
            // past the request deadline. Zero would mean no timeout, hence at least one.
            long remainingNanos = RequestDeadline.remainingNanos(request);
            int timeoutSeconds = (int) Math.max(1, TimeUnit.NANOSECONDS.toSeconds(remainingNanos + 999_999_999L));
            statement.setQueryTimeout(timeoutSeconds);
            statement.setLong(1, id);
            try (ResultSet row = statement.executeQuery()) {
                if (!row.next()) {
                    return null;
                }
                OffsetDateTime createdAt = row.getObject(4, OffsetDateTime.class);
                return new User(row.getLong(1), row.getString(2), row.getString(3),
                        createdAt.withOffsetSameInstant(ZoneOffset.UTC).format(CREATED_AT_FORMAT));
            }
        }
    }
}
