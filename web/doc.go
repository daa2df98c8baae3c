// Package web holds the demo UI, embedded with go:embed and served by
// package server at "/"; it talks to nothing but the public HTTP API and
// loads nothing from a CDN.
//
// The UI is plain HTML, CSS and JavaScript modules, no framework:
//
//   - static/index.html: the page (documents, the question form, answer
//     panes, the passage dialog);
//   - static/api.js: the API as the page uses it — fetch with the optional
//     API key (localStorage, sent as "Authorization: Bearer KEY"),
//     problem+json errors, XMLHttpRequest uploads with progress, and a
//     Server-Sent Events parser over a fetch body (EventSource cannot POST);
//   - static/app.js: the behaviour — per-file uploads polled through
//     GET /v1/jobs/{id}, the paged document list with delete, streamed
//     answers from POST /v1/query, citation chips, the timing bar, and
//     compare (one question in two modes, one after the other, side by side);
//   - static/style.css: the layout, usable down to 360 px wide.
//
// server/ui_test.go drives it in headless Chromium against the real API.
package web
