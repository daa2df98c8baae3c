package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// textUpload is the JSON body of POST /v1/documents.
type textUpload struct {
	Title string `json:"title"`
	Text  string `json:"text"`
}

// UploadAccepted is the 202 answer to POST /v1/documents: the documents
// being ingested (id = content hash, known before ingest) and the job that
// reports how far it got.
type UploadAccepted struct {
	Documents []UploadedDocument `json:"documents"`
	Job       Job                `json:"job"`
}

// UploadedDocument names one uploaded file and the document id it gets.
type UploadedDocument struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// DocumentList is the answer to GET /v1/documents.
type DocumentList struct {
	Documents []DocumentInfo `json:"documents"`
	Total     int            `json:"total"`
	Offset    int            `json:"offset"`
	Limit     int            `json:"limit"`
}

// DocumentDetail is the answer to GET /v1/documents/{id}.
type DocumentDetail struct {
	Document DocumentInfo `json:"document"`
	Chunks   []ChunkInfo  `json:"chunks"`
}

// Document list paging.
const (
	defaultPageLimit = 50
	maxPageLimit     = 1000
)

// postDocuments takes a multipart upload of files or a JSON {title, text}
// and queues an ingest job.
func (h *HTTP) postDocuments(c echo.Context) error {
	ct, params, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if err != nil {
		return problemf(http.StatusUnsupportedMediaType, "send multipart/form-data (files) or application/json ({\"title\", \"text\"})")
	}
	var uploads []upload
	switch ct {
	case "multipart/form-data":
		if uploads, err = h.readFiles(c, params["boundary"]); err != nil {
			return err
		}
	case echo.MIMEApplicationJSON:
		var body textUpload
		if err := h.decodeJSON(c, &body, true); err != nil {
			return err
		}
		if strings.TrimSpace(body.Text) == "" {
			return problemf(http.StatusBadRequest, "field \"text\" is missing or empty")
		}
		uploads = []upload{{title: body.Title, text: body.Text, isText: true}}
	default:
		return problemf(http.StatusUnsupportedMediaType, "content type %q: send multipart/form-data (files) or application/json ({\"title\", \"text\"})", ct)
	}
	j, err := h.jobs.enqueue(uploads)
	switch {
	case errors.Is(err, errQueueFull):
		return tooMany(5, "%v (%d jobs waiting): retry later", err, h.cfg.QueueLength)
	case errors.Is(err, errShuttingDown):
		return problemf(http.StatusServiceUnavailable, "%v", err)
	case err != nil:
		return err
	}
	acc := UploadAccepted{Job: j}
	for _, f := range j.Files {
		acc.Documents = append(acc.Documents, UploadedDocument{ID: f.Document, Name: f.Name})
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/jobs/"+j.ID)
	return c.JSON(http.StatusAccepted, acc)
}

// readFiles reads every file part of a multipart body within the upload
// limits. Parts without a file name (plain form fields) are ignored.
func (h *HTTP) readFiles(c echo.Context, boundary string) ([]upload, error) {
	if boundary == "" {
		return nil, problemf(http.StatusBadRequest, "multipart/form-data without a boundary")
	}
	mr := multipart.NewReader(limitBody(c, h.cfg.MaxUploadBytes), boundary)
	var out []upload
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, problemf(http.StatusRequestEntityTooLarge, "the upload exceeds the limit of %d bytes", h.cfg.MaxUploadBytes)
			}
			return nil, problemf(http.StatusBadRequest, "malformed multipart body: %v", err)
		}
		name := part.FileName()
		if name == "" {
			part.Close()
			continue
		}
		if len(out) == h.cfg.MaxFiles {
			return nil, problemf(http.StatusRequestEntityTooLarge, "more than %d files in one upload", h.cfg.MaxFiles)
		}
		data, err := io.ReadAll(part)
		part.Close()
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, problemf(http.StatusRequestEntityTooLarge, "the upload exceeds the limit of %d bytes", h.cfg.MaxUploadBytes)
			}
			return nil, problemf(http.StatusBadRequest, "reading file %q: %v", name, err)
		}
		if len(data) == 0 {
			return nil, problemf(http.StatusBadRequest, "file %q is empty", name)
		}
		out = append(out, upload{name: name, data: data})
	}
	if len(out) == 0 {
		return nil, problemf(http.StatusBadRequest, "the multipart body holds no file (send parts with a filename, e.g. curl -F file=@doc.pdf)")
	}
	return out, nil
}

// decodeJSON decodes the request body, within MaxJSONBytes, into v; the
// body must be one JSON object. strict refuses fields v does not have (a
// misspelt option would otherwise be silently ignored); the OpenAI route
// is lenient, as OpenAI clients send fields blendrag does not use.
func (h *HTTP) decodeJSON(c echo.Context, v any, strict bool) error {
	ct, _, _ := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if ct != echo.MIMEApplicationJSON && ct != "" {
		return problemf(http.StatusUnsupportedMediaType, "content type %q: send application/json", ct)
	}
	dec := json.NewDecoder(limitBody(c, h.cfg.MaxJSONBytes))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return problemf(http.StatusBadRequest, "the body is empty: send a JSON object")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return problemf(http.StatusBadRequest, "the body is truncated JSON")
		case errors.As(err, &mbe), errors.As(err, &se), errors.As(err, &te):
			return fmt.Errorf("decode body: %w", err) // toProblem words these
		}
		return problemf(http.StatusBadRequest, "the body is not a valid request: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return problemf(http.StatusBadRequest, "the body holds more than one JSON value")
	}
	return nil
}

// listDocuments pages through committed documents.
func (h *HTTP) listDocuments(c echo.Context) error {
	offset, err := intParam(c, "offset", 0, 0, 1<<31-1)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", defaultPageLimit, 1, maxPageLimit)
	if err != nil {
		return err
	}
	docs, total, err := h.svc.Documents(offset, limit)
	if err != nil {
		return err
	}
	if docs == nil {
		docs = []DocumentInfo{}
	}
	return c.JSON(http.StatusOK, DocumentList{Documents: docs, Total: total, Offset: offset, Limit: limit})
}

// intParam reads query parameter name as an int in [lo, hi], def when absent.
func intParam(c echo.Context, name string, def, lo, hi int) (int, error) {
	s := c.QueryParam(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		return 0, problemf(http.StatusBadRequest, "query parameter %s=%q: want an integer in %d..%d", name, s, lo, hi)
	}
	return v, nil
}

// getDocument returns a document's metadata and chunks.
func (h *HTTP) getDocument(c echo.Context) error {
	doc, chunks, err := h.svc.Document(c.Param("id"))
	if err != nil {
		return err
	}
	if chunks == nil {
		chunks = []ChunkInfo{}
	}
	return c.JSON(http.StatusOK, DocumentDetail{Document: doc, Chunks: chunks})
}

// deleteDocument removes a document.
func (h *HTTP) deleteDocument(c echo.Context) error {
	if err := h.svc.Delete(c.Request().Context(), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// getJob reports an ingest job.
func (h *HTTP) getJob(c echo.Context) error {
	j, ok := h.jobs.get(c.Param("id"))
	if !ok {
		return problemf(http.StatusNotFound, "no ingest job %q (jobs are kept in memory: a restart forgets them)", c.Param("id"))
	}
	return c.JSON(http.StatusOK, j)
}
