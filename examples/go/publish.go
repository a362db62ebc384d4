// Publishing from a Go backend with the standard library: one user (every
// tab of theirs), a group (every user whose id starts with a prefix), a
// topic. Run: PUSHWIRE_URL=http://127.0.0.1:8080 PUSHWIRE_KEY=... go run publish.go
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"
)

var client = &http.Client{Timeout: 10 * time.Second}

func publish(hub, key string, event any) (string, error) {
	body, err := json.Marshal(event)
	if err != nil {
		return "", err
	}
	request, err := http.NewRequest("POST", hub+"/api/v1/publish", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	request.Header.Set("Content-Type", "application/json")
	if key != "" {
		request.Header.Set("Authorization", "Bearer "+key)
	}
	response, err := client.Do(request)
	if err != nil {
		return "", err
	}
	defer response.Body.Close()
	var answer struct {
		ID    string `json:"id"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(response.Body).Decode(&answer); err != nil {
		return "", err
	}
	if response.StatusCode != http.StatusOK || answer.Error != nil {
		// Nothing was stored.
		return "", fmt.Errorf("pushwire refused the event: %d %+v", response.StatusCode, answer.Error)
	}
	return answer.ID, nil
}

func main() {
	hub := os.Getenv("PUSHWIRE_URL")
	if hub == "" {
		hub = "http://127.0.0.1:8080"
	}
	key := os.Getenv("PUSHWIRE_KEY")
	events := []any{
		map[string]any{"to": map[string]any{"users": []string{"alice"}}, "event": "order", "data": "order 42 shipped"},
		map[string]any{"to": map[string]any{"user_prefix": "team-7/"}, "data": "standup in 5"},
		map[string]any{"to": map[string]any{"topics": []string{"prices/EURCNY"}}, "data": map[string]any{"bid": 7.81}},
	}
	for _, event := range events {
		id, err := publish(hub, key, event)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(id)
	}
}
