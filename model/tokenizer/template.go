package tokenizer

import (
	"strings"
)

// Message is one chat turn.
type Message struct {
	Role    string // "system", "user" or "assistant"
	Content string
}

// TemplateKind names a chat prompt format.
type TemplateKind int

// The formats Render produces. Detection and rendering follow llama.cpp's
// llm_chat_detect_template / llm_chat_apply_template (llama-chat.cpp).
const (
	// ChatML: "<|im_start|>role\ncontent<|im_end|>\n" per message (SmolLM2,
	// Qwen).
	ChatML TemplateKind = iota
	// Llama2: "[INST] user [/INST]assistant</s>"; a system message is
	// written plainly before the first user message.
	Llama2
	// Llama2Sys: Llama2 with the system message in <<SYS>> ... <</SYS>>.
	Llama2Sys
	// Llama2SysBOS: Llama2Sys with "<s>" before each later [INST].
	Llama2SysBOS
	// Llama2SysStrip: Llama2Sys with contents trimmed of spaces.
	Llama2SysStrip
	// MistralV1, MistralV3, MistralV3Tekken and MistralV7 are Mistral's
	// official [INST] variants.
	MistralV1
	MistralV3
	MistralV3Tekken
	MistralV7
	// Llama3: "<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>"
	// with contents trimmed.
	Llama3
)

var kindNames = [...]string{"chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip",
	"mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7", "llama3"}

// String returns llama.cpp's name for the format.
func (k TemplateKind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Template renders a conversation into the prompt text a model was trained
// on. The text carries special tokens as literal strings ("<|im_start|>"), so
// encode it with parseSpecial; it never starts with BOS (add BOS per
// Tokenizer.AddBOS).
type Template struct {
	// Kind is the format.
	Kind TemplateKind
	// DefaultSystem, for ChatML, is the system message the Jinja template
	// inserts when the conversation does not start with one (SmolLM2: "You
	// are a helpful AI assistant named SmolLM, trained by Hugging Face").
	DefaultSystem string
	// Fallback is true when the source template was empty or not
	// recognised and ChatML was chosen for want of anything better.
	Fallback bool
}

// ParseTemplate chooses the format of a tokenizer.chat_template Jinja source
// by the markers llama.cpp looks for: "<|im_start|>" is ChatML, "[INST]" (or a
// source starting with "mistral") one of the Llama 2 / Mistral variants,
// "<|start_header_id|>" with "<|end_header_id|>" Llama 3. A literal
// "<|im_start|>system\n...<|im_end|>" block in a ChatML source becomes
// DefaultSystem, which is how SmolLM2's and Qwen's templates supply a default
// system prompt. Anything else, including an empty source, yields ChatML with
// Fallback set. A source that is exactly a llama.cpp format name ("chatml",
// "llama2", "llama3", ...) selects that format.
func ParseTemplate(src string) Template {
	for k, name := range kindNames {
		if src == name {
			return Template{Kind: TemplateKind(k)}
		}
	}
	has := func(s string) bool { return strings.Contains(src, s) }
	switch {
	case has("<|im_start|>"):
		return Template{Kind: ChatML, DefaultSystem: defaultSystem(src)}
	case strings.HasPrefix(src, "mistral") || has("[INST]"):
		switch {
		case has("[SYSTEM_PROMPT]"):
			return Template{Kind: MistralV7}
		case has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]"):
			if has(" [INST]") {
				return Template{Kind: MistralV1}
			} else if has(`"[INST]"`) {
				return Template{Kind: MistralV3Tekken}
			}
			return Template{Kind: MistralV3}
		case has("content.strip()"):
			return Template{Kind: Llama2SysStrip}
		case has("bos_token + '[INST]"):
			return Template{Kind: Llama2SysBOS}
		case has("<<SYS>>"):
			return Template{Kind: Llama2Sys}
		}
		return Template{Kind: Llama2}
	case has("<|start_header_id|>") && has("<|end_header_id|>"):
		return Template{Kind: Llama3}
	}
	return Template{Kind: ChatML, Fallback: true}
}

// defaultSystem finds the first "<|im_start|>system" block whose content is a
// literal string (no Jinja expression) and returns that content.
func defaultSystem(src string) string {
	const open, end = "<|im_start|>system", "<|im_end|>"
	for rest := src; ; {
		i := strings.Index(rest, open)
		if i < 0 {
			return ""
		}
		rest = rest[i+len(open):]
		var body string
		switch {
		case strings.HasPrefix(rest, "\n"):
			body = rest[1:]
		case strings.HasPrefix(rest, `\n`):
			body = rest[2:]
		default:
			continue
		}
		j := strings.Index(body, end)
		if j <= 0 {
			continue
		}
		lit := body[:j]
		if strings.ContainsAny(lit, `'"{}`) || strings.Contains(lit, "+") {
			continue
		}
		return strings.ReplaceAll(lit, `\n`, "\n")
	}
}

// Render writes msgs in the template's format; with addAssistantHeader it
// ends with the header that opens the assistant's reply (formats without one,
// such as the [INST] family, ignore it).
func (t Template) Render(msgs []Message, addAssistantHeader bool) string {
	var b strings.Builder
	switch t.Kind {
	case Llama2, Llama2Sys, Llama2SysBOS, Llama2SysStrip:
		renderLlama2(&b, t.Kind, msgs)
	case MistralV1, MistralV3, MistralV3Tekken:
		renderMistral(&b, t.Kind, msgs)
	case MistralV7:
		for _, m := range msgs {
			switch m.Role {
			case "system":
				b.WriteString("[SYSTEM_PROMPT] " + m.Content + "[/SYSTEM_PROMPT]")
			case "user":
				b.WriteString("[INST] " + m.Content + "[/INST]")
			default:
				b.WriteString(" " + m.Content + "</s>")
			}
		}
	case Llama3:
		for _, m := range msgs {
			b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n" + trimSpace(m.Content) + "<|eot_id|>")
		}
		if addAssistantHeader {
			b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
		}
	default: // ChatML
		if t.DefaultSystem != "" && len(msgs) > 0 && msgs[0].Role != "system" {
			b.WriteString("<|im_start|>system\n" + t.DefaultSystem + "<|im_end|>\n")
		}
		for _, m := range msgs {
			b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
		}
		if addAssistantHeader {
			b.WriteString("<|im_start|>assistant\n")
		}
	}
	return b.String()
}

func renderLlama2(b *strings.Builder, kind TemplateKind, msgs []Message) {
	system := kind != Llama2
	bosInHistory := kind == Llama2SysBOS
	strip := kind == Llama2SysStrip
	inside := true // the first [INST] goes without BOS
	b.WriteString("[INST] ")
	for _, m := range msgs {
		content := m.Content
		if strip {
			content = trimSpace(content)
		}
		if !inside {
			inside = true
			if bosInHistory {
				b.WriteString("<s>[INST] ")
			} else {
				b.WriteString("[INST] ")
			}
		}
		switch m.Role {
		case "system":
			if system {
				b.WriteString("<<SYS>>\n" + content + "\n<</SYS>>\n\n")
			} else {
				b.WriteString(content + "\n")
			}
		case "user":
			b.WriteString(content + " [/INST]")
		default:
			b.WriteString(content + "</s>")
			inside = false
		}
	}
}

func renderMistral(b *strings.Builder, kind TemplateKind, msgs []Message) {
	lead, trail := "", " "
	if kind == MistralV1 {
		lead = " "
	}
	if kind == MistralV3Tekken {
		trail = ""
	}
	inside := false
	for _, m := range msgs {
		if !inside {
			b.WriteString(lead + "[INST]" + trail)
			inside = true
		}
		switch m.Role {
		case "system":
			b.WriteString(m.Content + "\n\n")
		case "user":
			b.WriteString(m.Content + lead + "[/INST]")
		default:
			c := m.Content
			if kind == MistralV3 {
				c = trimSpace(c)
			}
			b.WriteString(trail + c + "</s>")
			inside = false
		}
	}
}

// trimSpace is llama-chat.cpp's trim: it strips ASCII whitespace only.
func trimSpace(s string) string {
	return strings.Trim(s, " \t\n\r\f\v")
}
