package peregrine.peer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.time.Duration;
import java.util.EnumSet;
import javax.servlet.DispatcherType;
import javax.servlet.Filter;
import javax.servlet.http.HttpServlet;
import org.eclipse.jetty.server.HttpConfiguration;
import org.eclipse.jetty.server.HttpConnectionFactory;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.FilterHolder;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;
import org.eclipse.jetty.util.component.LifeCycle;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Starts the Java peer in peregrine's benchmark: Jetty 9 with a servlet per route, HikariCP
 * and pgjdbc for PostgreSQL, Jackson for JSON.
 *
 * <p>Reads {@code PORT} (listens on 127.0.0.1:PORT) and {@code DATABASE_URL}
 * ({@code postgres://user[:password]@host[:port]/db}). Stops gracefully on SIGTERM or SIGINT.
 */
public final class Main {
    static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(10);

    private static final Duration SHUTDOWN_TIMEOUT = Duration.ofSeconds(10);
    private static final int POOL_SIZE = 25;
    private static final Logger LOG = LoggerFactory.getLogger(Main.class);

    private Main() {}

    public static void main(String[] args) throws Exception {
        int port;
        DatabaseUrl databaseUrl;
        try {
            port = parsePort(requireEnv("PORT"));
            databaseUrl = DatabaseUrl.parse(requireEnv("DATABASE_URL"));
        } catch (IllegalArgumentException e) {
            System.err.println(e.getMessage());
            System.exit(1);
            return;
        }

        HikariDataSource dataSource = openPool(databaseUrl);
        Server server = newServer(port, dataSource);
        server.start();
        server.join();
    }

    private static String requireEnv(String key) {
        String value = System.getenv(key);
        if (value == null || value.isEmpty()) {
            throw new IllegalArgumentException("environment variable " + key + " is missing or empty");
        }
        return value;
    }

    private static int parsePort(String text) {
        try {
            return Integer.parseInt(text);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("environment variable PORT must be a TCP port number, got " + text);
        }
    }

    /**
     * Opens a fixed-size pool, as HikariCP recommends (minimumIdle defaults to the maximum).
     * It connects at once, so a wrong DATABASE_URL fails at start-up.
     */
    private static HikariDataSource openPool(DatabaseUrl url) {
        HikariConfig config = new HikariConfig();
        config.setPoolName("users");
        config.setJdbcUrl(url.jdbcUrl());
        config.setUsername(url.user());
        config.setPassword(url.password());
        config.setMaximumPoolSize(POOL_SIZE);
        config.setConnectionTimeout(REQUEST_TIMEOUT.toMillis());
        return new HikariDataSource(config);
    }

    private static Server newServer(int port, HikariDataSource dataSource) {
        Server server = new Server();
        HttpConfiguration http = new HttpConfiguration();
        http.setSendServerVersion(false);
        ServerConnector connector = new ServerConnector(server, new HttpConnectionFactory(http));
        connector.setHost("127.0.0.1");
        connector.setPort(port);
        server.addConnector(connector);

        ServletContextHandler context = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
        context.setContextPath("/");
        // "" maps the context root only, where "/" would also catch every unmatched path.
        addServlet(context, new TextServlet("Hello, World!"), "");
        addServlet(context, new TextServlet("ok\n"), "/livez");
        addServlet(context, new UserServlet(dataSource, new ObjectMapper()), "/api/v1/users/*");

        // Filters run in the order they are added, and only on the API.
        addApiFilter(context, new RequestIdFilter());
        addApiFilter(context, new RealIpFilter());
        addApiFilter(context, new AccessLogFilter());
        addApiFilter(context, new RecoveryFilter());
        addApiFilter(context, new RequestDeadlineFilter(REQUEST_TIMEOUT));
        server.setHandler(context);

        server.setStopAtShutdown(true);
        server.setStopTimeout(SHUTDOWN_TIMEOUT.toMillis());
        server.addLifeCycleListener(new LifeCycle.Listener() {
            @Override
            public void lifeCycleStopped(LifeCycle event) {
                dataSource.close();
                LOG.info("stopped");
            }
        });
        return server;
    }

    private static void addServlet(ServletContextHandler context, HttpServlet servlet, String pathSpec) {
        context.addServlet(new ServletHolder(servlet), pathSpec);
    }

    private static void addApiFilter(ServletContextHandler context, Filter filter) {
        context.addFilter(new FilterHolder(filter), "/api/*", EnumSet.of(DispatcherType.REQUEST));
    }
}
