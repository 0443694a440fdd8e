package main

import (
	"context"
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
	"golang.org/x/sync/errgroup"
)

// profileTimeout bounds the three reads of a profile, as peregrine's PROFILE_TIMEOUT does.
const profileTimeout = 3 * time.Second

// profileOrders is how many of the newest orders a profile shows.
const profileOrders = 10

const selectOrders = `SELECT id, user_id, amount, currency, status, created_at
FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT $2`

const selectPreferences = `SELECT language, time_zone, notify_email, notify_sms, notify_push, theme
FROM preferences WHERE user_id = $1`

type order struct {
	ID        int64  `json:"id"`
	UserID    int64  `json:"user_id"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Status    string `json:"status"`
	CreatedAt string `json:"created_at"`
}

type notifications struct {
	Email bool `json:"email"`
	SMS   bool `json:"sms"`
	Push  bool `json:"push"`
}

type preferences struct {
	Language      string        `json:"language"`
	TimeZone      string        `json:"time_zone"`
	Notifications notifications `json:"notifications"`
	Theme         string        `json:"theme"`
}

// defaultPreferences are those of a user who never saved any, as in peregrine.
var defaultPreferences = preferences{
	Language:      "en",
	TimeZone:      "UTC",
	Notifications: notifications{Email: true},
	Theme:         "system",
}

type profile struct {
	User        user        `json:"user"`
	Orders      []order     `json:"orders"`
	Preferences preferences `json:"preferences"`
}

// errUserNotFound ends the profile's group with a 404.
var errUserNotFound = errors.New("user not found")

type profileHandler struct {
	pool *pgxpool.Pool
}

// get reads the user, the newest orders and the preferences in three goroutines of one
// errgroup. Each goroutine writes only its own field of p. The first error cancels the
// group's context, which stops the other queries, and g.Wait returns that first error.
func (h profileHandler) get(w http.ResponseWriter, r *http.Request) {
	rawID := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(rawID, 10, 64)
	if err != nil || id < 1 {
		detail := fmt.Sprintf("user id must be a positive 64-bit integer, got %q", rawID)
		writeProblem(w, http.StatusBadRequest, detail)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), profileTimeout)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	var p profile

	g.Go(func() error {
		var createdAt time.Time
		err := h.pool.QueryRow(ctx, selectUser, id).
			Scan(&p.User.ID, &p.User.Name, &p.User.Email, &createdAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errUserNotFound
		}
		if err != nil {
			return fmt.Errorf("query user: %w", err)
		}
		p.User.CreatedAt = createdAt.UTC().Format(createdAtLayout)
		return nil
	})
	g.Go(func() error {
		orders, err := h.orders(ctx, id)
		p.Orders = orders
		return err
	})
	g.Go(func() error {
		prefs, err := h.preferences(ctx, id)
		p.Preferences = prefs
		return err
	})

	err = g.Wait()
	switch {
	case errors.Is(err, errUserNotFound):
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no user with id %d", id))
		return
	case err != nil && r.Context().Err() != nil:
		// The client is gone, or middleware.Timeout has written its 504.
		return
	case errors.Is(err, context.DeadlineExceeded):
		writeProblem(w, http.StatusGatewayTimeout, "the profile's reads did not finish in time")
		return
	case err != nil:
		log.Printf("[%s] profile %d failed: %v", middleware.GetReqID(r.Context()), id, err)
		writeProblem(w, http.StatusServiceUnavailable, "the database is unavailable")
		return
	}

	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(p); err != nil {
		log.Printf("[%s] write profile %d failed: %v", middleware.GetReqID(r.Context()), id, err)
	}
}

func (h profileHandler) orders(ctx context.Context, id int64) ([]order, error) {
	rows, err := h.pool.Query(ctx, selectOrders, id, profileOrders)
	if err != nil {
		return nil, fmt.Errorf("query orders: %w", err)
	}
	defer rows.Close()

	orders := make([]order, 0, profileOrders)
	for rows.Next() {
		var o order
		var createdAt time.Time
		if err := rows.Scan(&o.ID, &o.UserID, &o.Amount, &o.Currency, &o.Status, &createdAt); err != nil {
			return nil, fmt.Errorf("read orders: %w", err)
		}
		o.CreatedAt = createdAt.UTC().Format(createdAtLayout)
		orders = append(orders, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	return orders, nil
}

func (h profileHandler) preferences(ctx context.Context, id int64) (preferences, error) {
	var p preferences
	err := h.pool.QueryRow(ctx, selectPreferences, id).Scan(&p.Language, &p.TimeZone,
		&p.Notifications.Email, &p.Notifications.SMS, &p.Notifications.Push, &p.Theme)
	if errors.Is(err, pgx.ErrNoRows) {
		return defaultPreferences, nil
	}
	if err != nil {
		return preferences{}, fmt.Errorf("query preferences: %w", err)
	}
	return p, nil
}
