package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// ChatRequest is the body of POST /v1/chat/completions, the subset of
// OpenAI's chat completion request blendrag honours (other fields are
// ignored). The last message must be the user's question; earlier user and
// assistant turns are rendered ahead of it as context (see chatQuestion);
// system messages are ignored (the store's system prompt is fixed: it is
// part of every cached chunk's KV). K and Mode are blendrag extensions.
type ChatRequest struct {
	Model    string        `json:"model"`
	Messages []ChatMessage `json:"messages"`
	Stream   bool          `json:"stream"`
	// MaxTokens (or the newer max_completion_tokens) bounds the answer;
	// default DefaultMaxTokens.
	MaxTokens           int `json:"max_tokens"`
	MaxCompletionTokens int `json:"max_completion_tokens"`
	// Temperature 0 (the default when absent) decodes greedily.
	Temperature float64 `json:"temperature"`
	Seed        uint64  `json:"seed"`
	N           int     `json:"n"`
	K           int     `json:"k"`
	Mode        string  `json:"mode"`
}

// ChatMessage is one message. Content is a string or an array of content
// parts, of which the "text" parts are read.
type ChatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text returns the message's text.
func (m ChatMessage) text() (string, error) {
	if len(m.Content) == 0 || string(m.Content) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(m.Content, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", problemf(http.StatusBadRequest, "a %s message's content is neither a string nor an array of content parts", m.Role)
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), nil
}

// ChatCompletion is OpenAI's chat.completion object plus blendrag's
// citations and timings.
type ChatCompletion struct {
	ID        string       `json:"id"`
	Object    string       `json:"object"` // "chat.completion"
	Created   int64        `json:"created"`
	Model     string       `json:"model"`
	Choices   []ChatChoice `json:"choices"`
	Citations []Citation   `json:"citations"`
	Timings   Timings      `json:"timings"`
}

// ChatChoice is the one choice of a ChatCompletion.
type ChatChoice struct {
	Index        int             `json:"index"`
	Message      ChatMessageText `json:"message"`
	FinishReason string          `json:"finish_reason"`
}

// ChatMessageText is a message with plain text content.
type ChatMessageText struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatChunk is OpenAI's chat.completion.chunk object (one streamed piece);
// the last chunk also carries the citations and timings.
type ChatChunk struct {
	ID        string            `json:"id"`
	Object    string            `json:"object"` // "chat.completion.chunk"
	Created   int64             `json:"created"`
	Model     string            `json:"model"`
	Choices   []ChatChunkChoice `json:"choices"`
	Citations []Citation        `json:"citations,omitempty"`
	Timings   *Timings          `json:"timings,omitempty"`
}

// ChatChunkChoice is the one choice of a ChatChunk.
type ChatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        ChatDelta `json:"delta"`
	FinishReason *string   `json:"finish_reason"`
}

// ChatDelta is the new part of the message in a ChatChunk.
type ChatDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

// chatQuestion renders the conversation as one question within limit
// bytes: the last (user) message, preceded by as many of the most recent
// earlier user and assistant turns as fit, as "User: …" / "Assistant: …"
// lines. The whole text is also the retrieval query, so earlier turns
// help resolve a follow-up such as "and when was it built?".
func chatQuestion(msgs []ChatMessage, limit int) (string, error) {
	if len(msgs) == 0 {
		return "", problemf(http.StatusBadRequest, "messages is missing or empty")
	}
	last := msgs[len(msgs)-1]
	if last.Role != "user" {
		return "", problemf(http.StatusBadRequest, "the last message must be the user's question, not a %q message", last.Role)
	}
	q, err := last.text()
	if err != nil {
		return "", err
	}
	q = strings.TrimSpace(q)
	if q == "" {
		return "", problemf(http.StatusBadRequest, "the last user message is empty")
	}
	if len(q) > limit {
		return "", problemf(http.StatusRequestEntityTooLarge, "the question is %d bytes, the limit is %d", len(q), limit)
	}
	const head, lead = "Earlier in this conversation:\n", "\nCurrent question: "
	var turns []string
	used := len(head) + len(lead) + len(q)
	for i := len(msgs) - 2; i >= 0; i-- {
		m := msgs[i]
		var who string
		switch m.Role {
		case "user":
			who = "User: "
		case "assistant":
			who = "Assistant: "
		case "system", "developer", "tool":
			continue
		default:
			return "", problemf(http.StatusBadRequest, "unknown message role %q", m.Role)
		}
		t, err := m.text()
		if err != nil {
			return "", err
		}
		line := who + strings.Join(strings.Fields(t), " ") + "\n"
		if used+len(line) > limit {
			break
		}
		used += len(line)
		turns = append(turns, line)
	}
	if len(turns) == 0 {
		return q, nil
	}
	var b strings.Builder
	b.WriteString(head)
	for i := len(turns) - 1; i >= 0; i-- {
		b.WriteString(turns[i])
	}
	b.WriteString(lead)
	b.WriteString(q)
	return b.String(), nil
}

// finishReason maps a stop reason to OpenAI's.
func finishReason(stop string) string {
	if stop == "max_tokens" || stop == "context" {
		return "length"
	}
	return "stop"
}

// chatCompletions answers an OpenAI-style chat request.
func (h *HTTP) chatCompletions(c echo.Context) error {
	var req ChatRequest
	if err := h.decodeJSON(c, &req, false); err != nil {
		return err
	}
	if req.N > 1 {
		return problemf(http.StatusBadRequest, "n = %d: only one choice is generated", req.N)
	}
	if req.MaxTokens == 0 {
		req.MaxTokens = req.MaxCompletionTokens
	}
	if req.Temperature < 0 || req.Temperature > 2 {
		return problemf(http.StatusBadRequest, "temperature %v outside [0, 2]", req.Temperature)
	}
	q, err := chatQuestion(req.Messages, h.cfg.MaxQuestionBytes)
	if err != nil {
		return err
	}
	ask := AskRequest{Question: q, K: req.K, Mode: req.Mode, MaxTokens: req.MaxTokens, Temperature: req.Temperature, Seed: req.Seed}
	if err := h.checkQuestion(ask); err != nil {
		return err
	}
	var idb [12]byte
	rand.Read(idb[:])
	id, created, model := "chatcmpl-"+hex.EncodeToString(idb[:]), time.Now().Unix(), req.Model
	if model == "" {
		model = "blendrag"
	}
	ctx := c.Request().Context()
	if !req.Stream {
		ans, err := h.ask(ctx, ask, nil)
		if err != nil {
			return err
		}
		if ans.Citations == nil {
			ans.Citations = []Citation{}
		}
		return c.JSON(http.StatusOK, ChatCompletion{
			ID: id, Object: "chat.completion", Created: created, Model: model,
			Choices: []ChatChoice{{Message: ChatMessageText{Role: "assistant", Content: ans.Text},
				FinishReason: finishReason(ans.Stop)}},
			Citations: ans.Citations, Timings: ans.Timings,
		})
	}

	sw := &sseWriter{c: c}
	chunk := func(d ChatDelta) ChatChunk {
		return ChatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			Choices: []ChatChunkChoice{{Delta: d}}}
	}
	first := true
	ans, err := h.ask(ctx, ask, func(piece string) error {
		if first {
			first = false
			if err := sw.data(chunk(ChatDelta{Role: "assistant"})); err != nil {
				return err
			}
		}
		return sw.data(chunk(ChatDelta{Content: piece}))
	})
	if err != nil {
		if !sw.started {
			return err
		}
		sw.data(struct {
			Error *Problem `json:"error"`
		}{toProblem(err)})
		return err
	}
	if first {
		if err := sw.data(chunk(ChatDelta{Role: "assistant"})); err != nil {
			return err
		}
	}
	if ans.Citations == nil {
		ans.Citations = []Citation{}
	}
	end := chunk(ChatDelta{})
	fr := finishReason(ans.Stop)
	end.Choices[0].FinishReason, end.Citations, end.Timings = &fr, ans.Citations, &ans.Timings
	if err := sw.data(end); err != nil {
		return err
	}
	if err := sw.raw("[DONE]"); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	return nil
}
