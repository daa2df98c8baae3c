// Package web will hold the demo UI, embedded with go:embed and served by
// package server; it talks to nothing but the public HTTP API and loads
// nothing from a CDN.
//
// Not built yet: see the product issue.
package web
