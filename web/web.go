package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// FS returns the UI's files (index.html at the root).
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// Handler serves the UI's files; mount it at "/".
func Handler() http.Handler { return http.FileServer(http.FS(FS())) }
