package server

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/model"
)

// openAPISpec is the part of the OpenAPI document the tests read.
type openAPISpec struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

func TestOpenAPIDocumentMatchesRoutes(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{})
	var spec openAPISpec
	th.call(t, "GET", "/openapi.json", nil, http.StatusOK, &spec)
	if !strings.HasPrefix(spec.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", spec.OpenAPI)
	}
	param := regexp.MustCompile(`:([a-z_]+)`)
	registered := map[string]bool{}
	for _, r := range th.h.e.Routes() {
		if strings.HasSuffix(r.Path, "*") {
			continue // the UI's files under /: not an API route
		}
		key := strings.ToLower(r.Method) + " " + param.ReplaceAllString(r.Path, "{$1}")
		registered[key] = true
	}
	documented := map[string]bool{}
	for path, ops := range spec.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented[method+" "+path] = true
		}
	}
	for k := range registered {
		if !documented[k] {
			t.Errorf("route %s is not in openapi.json", k)
		}
	}
	for k := range documented {
		if !registered[k] {
			t.Errorf("openapi.json documents %s, which is not a route", k)
		}
	}
	if len(registered) < 13 {
		t.Errorf("only %d routes registered: %v", len(registered), registered)
	}
}

// jsonFields lists the JSON field names of struct type typ, embedded
// structs flattened.
func jsonFields(typ reflect.Type) []string {
	var out []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

func TestOpenAPISchemasHoldEveryJSONField(t *testing.T) {
	var spec openAPISpec
	if err := json.Unmarshal(openAPIDoc, &spec); err != nil {
		t.Fatal(err)
	}
	for schema, v := range map[string]any{
		"QueryRequest": QueryRequest{}, "SearchRequest": SearchRequest{}, "Answer": Answer{}, "Timings": Timings{},
		"Job": Job{}, "JobFile": JobFile{}, "Readiness": Readiness{}, "Document": DocumentInfo{}, "RapidTimings": RapidTimings{},
		"DocumentList": DocumentList{}, "DocumentDetail": DocumentDetail{}, "SearchResponse": SearchResponse{},
		"UploadAccepted": UploadAccepted{}, "Problem": Problem{}, "TextUpload": textUpload{},
		"ChatCompletion": ChatCompletion{}, "ChatRequest": ChatRequest{}, "Chunk": ChunkInfo{},
		"KVTiers": KVTiers{}, "ChunkTierStats": model.ChunkTierStats{},
	} {
		props := spec.Components.Schemas[schema].Properties
		if props == nil {
			t.Errorf("schema %s missing", schema)
			continue
		}
		fields := jsonFields(reflect.TypeOf(v))
		for _, f := range fields {
			if _, ok := props[f]; !ok {
				t.Errorf("schema %s lacks field %q", schema, f)
			}
		}
		for p := range props {
			if !slices.Contains(fields, p) {
				t.Errorf("schema %s has field %q the Go type does not", schema, p)
			}
		}
	}
}
