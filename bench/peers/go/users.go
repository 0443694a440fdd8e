package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

// pgx prepares this statement once per connection and reuses it, because its default
// statement cache mode is "prepare".
const selectUser = `SELECT id, name, email, created_at FROM users WHERE id = $1`

// createdAtLayout is RFC 3339 in UTC with the microsecond precision of timestamptz, so every
// peer sends the same number of fraction digits.
const createdAtLayout = "2006-01-02T15:04:05.000000Z07:00"

type user struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	CreatedAt string `json:"created_at"`
}

// problem is an RFC 9457 problem details body.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

type userHandler struct {
	pool *pgxpool.Pool
}

func (h userHandler) get(w http.ResponseWriter, r *http.Request) {
	rawID := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(rawID, 10, 64)
	if err != nil || id < 1 {
		detail := fmt.Sprintf("user id must be a positive 64-bit integer, got %q", rawID)
		writeProblem(w, http.StatusBadRequest, detail)
		return
	}

	var u user
	var createdAt time.Time
	err = h.pool.QueryRow(r.Context(), selectUser, id).Scan(&u.ID, &u.Name, &u.Email, &createdAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no user with id %d", id))
		return
	case err != nil && r.Context().Err() != nil:
		// middleware.Timeout writes the 504 once the deadline has passed, and the client of a
		// cancelled request is gone.
		return
	case err != nil:
		log.Printf("[%s] query user %d failed: %v", middleware.GetReqID(r.Context()), id, err)
		writeProblem(w, http.StatusServiceUnavailable, "the database is unavailable")
		return
	}
	u.CreatedAt = createdAt.UTC().Format(createdAtLayout)

	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(u); err != nil {
		log.Printf("[%s] write user %d failed: %v", middleware.GetReqID(r.Context()), id, err)
	}
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	body := problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
	if err := json.NewEncoder(w).Encode(body); err != nil {
		log.Printf("write problem %d failed: %v", status, err)
	}
}
