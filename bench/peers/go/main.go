// Command gopeer is the Go peer in peregrine's benchmark. Plain net/http serves the hello
// and liveness routes, chi with its standard middleware serves the users API and the
// profile (three reads in an errgroup), and a pgx v4 pool reads PostgreSQL.
//
// It reads PORT (listens on 127.0.0.1:PORT) and DATABASE_URL from the environment and
// stops gracefully on SIGINT or SIGTERM.
//
// setup.sh builds it in GOPATH mode, where Go ignores go.mod and applies the run-time
// defaults of Go 1.20 (GODEBUG), among them a ServeMux without method and {$} patterns.
// The directive below selects the defaults of Go 1.23 instead.
//
//go:debug default=go1.23
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v4/pgxpool"
)

const (
	requestTimeout  = 10 * time.Second
	shutdownTimeout = 10 * time.Second

	// Pool settings of the Go service being compared: 25 open, 10 idle, 5 min lifetime.
	poolMaxConns        = 25
	poolMinConns        = 10
	poolMaxConnLifetime = 5 * time.Minute
)

func main() {
	if err := run(); err != nil {
		log.Printf("gopeer: %v", err)
		os.Exit(1)
	}
}

func run() error {
	port, err := requireEnv("PORT")
	if err != nil {
		return err
	}
	databaseURL, err := requireEnv("DATABASE_URL")
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pool, err := openPool(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return fmt.Errorf("listen on 127.0.0.1:%s: %w", port, err)
	}
	server := &http.Server{
		Handler:           newHandler(pool),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(listener) }()
	log.Printf("listening on %s", listener.Addr())

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	log.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

func requireEnv(key string) (string, error) {
	value := os.Getenv(key)
	if value == "" {
		return "", fmt.Errorf("environment variable %s is missing or empty", key)
	}
	return value, nil
}

// openPool connects the pool and opens its minimum of connections, so a wrong DATABASE_URL
// fails at start-up instead of on the first request.
func openPool(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	config, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	config.MaxConns = poolMaxConns
	config.MinConns = poolMinConns
	config.MaxConnLifetime = poolMaxConnLifetime

	pool, err := pgxpool.ConnectConfig(ctx, config)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: %w",
			config.ConnConfig.Host, config.ConnConfig.Port, err)
	}
	return pool, nil
}

// newHandler serves the hello and liveness routes with plain net/http handlers and hands
// everything under /api/v1/ to the chi router, so only the API runs the middleware.
func newHandler(pool *pgxpool.Pool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", hello)
	mux.HandleFunc("GET /livez", livez)
	mux.Handle("/api/v1/", newAPIRouter(pool))
	return mux
}

func newAPIRouter(pool *pgxpool.Pool) http.Handler {
	users := userHandler{pool: pool}
	profiles := profileHandler{pool: pool}

	r := chi.NewRouter()
	r.Use(middleware.RequestID)
	r.Use(echoRequestID)
	r.Use(middleware.RealIP)
	r.Use(middleware.Logger)
	r.Use(middleware.Recoverer)
	r.Use(middleware.Timeout(requestTimeout))
	r.Get("/api/v1/users/{id}", users.get)
	r.Get("/api/v1/users/{id}/profile", profiles.get)
	return r
}

// echoRequestID sets the X-Request-Id response header to the id that middleware.RequestID
// read or generated, because chi's middleware keeps it in the context only.
func echoRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(middleware.RequestIDHeader, middleware.GetReqID(r.Context()))
		next.ServeHTTP(w, r)
	})
}

func hello(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "Hello, World!")
}

func livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}
