// The endpoint pushwire's --webhook-url posts to: it verifies each message
// (Standard Webhooks: the webhook-id, webhook-timestamp and
// webhook-signature headers), acts on it once, and answers 204 quickly.
// Run: PUSHWIRE_WEBHOOK_SECRET=whsec_... PORT=3000 go run webhook-receiver.go
// and start the hub with --webhook-url http://127.0.0.1:3000/webhooks
// and the same --webhook-secret.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const tolerance = 5 * time.Minute // between the hub's clock and ours

// A message as pushwire sends it; data stays raw until its type is known.
type message struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// The ids already handled. The hub sends a message again until it gets a
// 2xx, with the same webhook-id: an application keeps these in its
// database (a unique key), for longer than the hub retries.
var (
	handledMu sync.Mutex
	handled   = map[string]bool{}
)

// Whether one of the space-separated "v1,<base64>" signatures is ours.
func verified(key []byte, id, timestamp, signatures string, body []byte) bool {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	expected := []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	for _, entry := range strings.Split(signatures, " ") {
		if strings.HasPrefix(entry, "v1,") && hmac.Equal([]byte(entry[3:]), expected) {
			return true
		}
	}
	return false
}

// Where the application acts. Anything slow (an e-mail, a mobile push)
// goes to a job queue: the hub waits for the answer and retries on a
// timeout.
func act(m message) {
	switch m.Type {
	case "user.online": // data: {user}
	case "user.offline": // data: {user}
	case "stream.opened": // data: {user (or null), route, stream}
	case "stream.closed": // data: {user, route, stream, reason, duration_ms}
	case "event.undelivered": // data: {event: {id, type, data, truncated}, users}
		// These users did not get the event: send them an e-mail or a mobile push.
	}
}

func main() {
	secret := os.Getenv("PUSHWIRE_WEBHOOK_SECRET")
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if !strings.HasPrefix(secret, "whsec_") || err != nil {
		fmt.Fprintln(os.Stderr, "PUSHWIRE_WEBHOOK_SECRET must be whsec_<base64>")
		os.Exit(2)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "3000"
	}
	http.HandleFunc("/webhooks", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		// The signature covers the body's bytes exactly as sent: verify
		// them before parsing.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
			if len(r.Header.Values(name)) == 0 {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
		id := r.Header.Get("webhook-id")
		timestamp := r.Header.Get("webhook-timestamp")
		signatures := r.Header.Get("webhook-signature")
		seconds, err := strconv.ParseInt(timestamp, 10, 64)
		age := time.Since(time.Unix(seconds, 0))
		if err != nil || age > tolerance || age < -tolerance || !verified(key, id, timestamp, signatures, body) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		// One lock from the check to the record, so that two deliveries
		// of one id at once are not both acted on.
		handledMu.Lock()
		defer handledMu.Unlock()
		if handled[id] {
			w.WriteHeader(http.StatusNoContent) // a retry of a message already handled
			return
		}
		var m message
		if err := json.Unmarshal(body, &m); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		act(m)
		handled[id] = true
		line, _ := json.Marshal(struct {
			ID   string          `json:"id"`
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}{id, m.Type, m.Data})
		os.Stdout.Write(append(line, '\n')) // unbuffered: written when this returns
		w.WriteHeader(http.StatusNoContent)
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
