// The endpoint pushwire's --auth-url calls before it opens a stream: it
// reads the application's own session cookie and answers for the session.
// Run: SESSIONS='{"s3cr3t": "alice"}' PORT=3000 go run auth-backend.go
// and start the hub with --auth-url http://127.0.0.1:3000/pushwire/auth
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	sessions := map[string]string{} // session id -> user id
	if err := json.Unmarshal([]byte(os.Getenv("SESSIONS")), &sessions); err != nil {
		fmt.Fprintln(os.Stderr, "SESSIONS must be a JSON object:", err)
		os.Exit(2)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "3000"
	}
	http.HandleFunc("/pushwire/auth", func(w http.ResponseWriter, r *http.Request) {
		// What pushwire asks: route, user, topics, last_event_id, client,
		// and the forwarded headers (cookie, authorization).
		var ask struct {
			Headers map[string]string `json:"headers"`
		}
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&ask) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		// The forwarded Cookie header, read as net/http reads one.
		parsed := &http.Request{Header: http.Header{"Cookie": {ask.Headers["cookie"]}}}
		cookie, err := parsed.Cookie("session")
		user, known := "", false
		if err == nil {
			user, known = sessions[cookie.Value]
		}
		if !known {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"user":       user,
			"topics":     []string{"news", "orders/" + user + "/*"},
			"expires_in": 3600,
		})
	})
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on " + listener.Addr().String())
	if err := http.Serve(listener, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
