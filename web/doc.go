// Package web holds the demo UI, embedded with go:embed and served by
// package server at "/"; it talks to nothing but the public HTTP API and
// loads nothing from a CDN.
package web
