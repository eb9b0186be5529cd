// Package s3 is a backend over any server of the plain S3 API (AWS S3,
// MinIO, Ceph RGW, versitygw ...), through minio-go with path-style
// addressing.
//
// Each object is stored framed (objstore.Framer): a 64-byte header and
// 4 KiB blocks each followed by its CRC-32C, the EC store's checksums. A
// ranged read fetches only the blocks that cover the range with one
// ranged GET and checks them; the header, read once per object and
// remembered (objects are immutable), gives the size. A corrupt or
// truncated object is an error (objstore.ErrCorrupt), never data.
//
// Every request carries a timeout: Config.Timeout, plus the time its
// bytes take at minRate, so that a hung connection is given up and
// retried by the caller, never waited on for good. The store does not
// retry uploads itself: the engine's uploader retries with backoff, and
// a failing store fills the write buffer and so throttles writers.
//
// Put is one PUT up to PartSize bytes and a multipart upload above it.
// Create adds If-None-Match: *, so that the server refuses a name that
// exists (HTTP 412): the engine writes manifests so.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"vpool/objstore"
	"vpool/volume/backend"
)

// Config is where the store lives and how to reach it.
type Config struct {
	// Endpoint is the server's URL: "http://127.0.0.1:7070" or
	// "https://s3.example.com" (https when no scheme is given).
	Endpoint  string
	Bucket    string
	Region    string // "us-east-1" when empty
	AccessKey string
	SecretKey string
	// Timeout is how long a request may take beyond the time its bytes
	// need at minRate; 0: DefaultTimeout.
	Timeout time.Duration
	// PartSize is the largest object sent in one PUT, and the size of a
	// multipart upload's parts above it; 0: DefaultPartSize.
	PartSize int64
	Log      *slog.Logger
}

// Defaults of Config.
const (
	DefaultTimeout  = 30 * time.Second
	DefaultPartSize = 256 << 20 // an SCO (at most 128 MiB) always goes in one PUT
	// minRate is the slowest transfer a request's timeout allows for.
	minRate = 1 << 20
)

// Store is a backend.Store over one S3 bucket.
type Store struct {
	c        *minio.Client
	bucket   string
	timeout  time.Duration
	partSize int64
	log      *slog.Logger

	sizes objstore.Cache[int64] // object sizes from their headers
	stats Stats
}

// Stats counts requests and bytes, for status and tests.
type Stats struct {
	Gets, Puts, Lists, Deletes atomic.Int64
	GetBytes, PutBytes         atomic.Int64 // bytes on the wire, framing included
}

const sizeCacheMax = 1 << 16

// New returns a store over cfg.Bucket. It makes no request: an endpoint
// that is down at start is found by the first call (see Check).
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket")
	}
	if cfg.Endpoint == "" {
		return nil, errors.New("s3: no endpoint")
	}
	ep := cfg.Endpoint
	if !strings.Contains(ep, "://") {
		ep = "https://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("s3: endpoint %q: want http://host:port or https://host:port", cfg.Endpoint)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < 5<<20 {
		return nil, fmt.Errorf("s3: part size %d: S3 wants at least 5 MiB", cfg.PartSize)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	dial := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // the object store is reached directly
		DialContext:           dial.DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		DisableCompression:    true,
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1, // the caller retries, with its own backoff
		// checksums as trailers: the CRC-32C of a body is computed as it
		// is sent, never by reading it twice
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	s := &Store{c: c, bucket: cfg.Bucket, timeout: cfg.Timeout, partSize: cfg.PartSize, log: cfg.Log}
	s.sizes.Max = sizeCacheMax
	return s, nil
}

// Check makes sure the bucket exists, creating it if it does not.
func (s *Store) Check(ctx context.Context) error {
	ctx, cancel := s.reqCtx(ctx, 0)
	defer cancel()
	ok, err := s.c.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.errorf(err, "bucket %s", s.bucket)
	}
	if ok {
		return nil
	}
	if err := s.c.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{}); err != nil {
		return s.errorf(err, "create bucket %s", s.bucket)
	}
	s.log.Info("s3: bucket created", "bucket", s.bucket)
	return nil
}

// Stats returns the store's counters.
func (s *Store) Stats() *Stats { return &s.stats }

// reqCtx bounds one request that moves n bytes.
func (s *Store) reqCtx(ctx context.Context, n int64) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout+time.Duration(n/minRate)*time.Second)
}

// errorf maps a client error to the contract's sentinels and names the
// request; ctx errors stay as they are (errors.Is finds them).
func (s *Store) errorf(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	r := minio.ToErrorResponse(err)
	switch {
	case r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound && r.Code != "NoSuchBucket":
		return fmt.Errorf("%w: %s", backend.ErrNotFound, what)
	case r.Code == "PreconditionFailed" || r.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %s", backend.ErrExists, what)
	case r.Code == "InvalidRange" || r.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: %s: object shorter than its header says (truncated)", objstore.ErrCorrupt, what)
	}
	return fmt.Errorf("s3: %s: %w", what, err)
}

// Put stores size bytes of src as name, framed.
func (s *Store) Put(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	return s.put(ctx, name, src, size, false)
}

// Create is Put with If-None-Match: *: backend.ErrExists if name exists.
func (s *Store) Create(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	return s.put(ctx, name, src, size, true)
}

func (s *Store) put(ctx context.Context, name string, src io.ReaderAt, size int64, excl bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f := objstore.NewFramer(src, size)
	// The CRC-32C of the whole body goes with it (a trailer): the server
	// checks it, so a body cut short (a source that failed, a connection
	// dropped) is refused, never stored in place of the previous object.
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: uint64(s.partSize),
		DisableContentSha256: true, Checksum: minio.ChecksumCRC32C}
	if excl {
		opts.SetMatchETagExcept("*")
	}
	ctx, cancel := s.reqCtx(ctx, f.Size())
	defer cancel()
	s.sizes.Forget(name) // whatever happens, the next read looks at the header
	s.stats.Puts.Add(1)
	info, err := s.c.PutObject(ctx, s.bucket, name, io.NewSectionReader(f, 0, f.Size()), f.Size(), opts)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			return fmt.Errorf("s3: put %s: %w", name, cerr)
		}
		return s.errorf(err, "put %s", name)
	}
	if info.Size != f.Size() {
		return fmt.Errorf("s3: put %s: server took %d of %d bytes", name, info.Size, f.Size())
	}
	s.stats.PutBytes.Add(f.Size())
	s.sizes.Put(name, size)
	return nil
}

// get fetches [off, off+len(p)) of the stored (framed) form of name.
func (s *Store) get(ctx context.Context, name string, p []byte, off int64) error {
	ctx, cancel := s.reqCtx(ctx, int64(len(p)))
	defer cancel()
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+int64(len(p))-1); err != nil {
		return fmt.Errorf("s3: get %s: %w", name, err)
	}
	s.stats.Gets.Add(1)
	obj, err := s.c.GetObject(ctx, s.bucket, name, opts)
	if err != nil {
		return s.errorf(err, "get %s", name)
	}
	defer obj.Close()
	n, err := io.ReadFull(obj, p)
	s.stats.GetBytes.Add(int64(n))
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("s3: get %s: %w", name, ctx.Err())
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("%w: %s: %d of %d bytes at %d (truncated)", objstore.ErrCorrupt, name, n, len(p), off)
	}
	return s.errorf(err, "get %s", name)
}

// Size returns the object's length, from its header.
func (s *Store) Size(ctx context.Context, name string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if n, ok := s.sizes.Get(name); ok {
		return n, nil
	}
	var hdr [objstore.FrameHeaderSize]byte
	if err := s.get(ctx, name, hdr[:], 0); err != nil {
		return 0, err
	}
	n, err := objstore.ParseFrameHeader(hdr[:])
	if err != nil {
		return 0, fmt.Errorf("s3: %s: %w", name, err)
	}
	s.sizes.Put(name, n)
	return n, nil
}

// GetRange fills p from the object's bytes at off, with one ranged GET of
// the blocks that hold them.
func (s *Store) GetRange(ctx context.Context, name string, p []byte, off int64) error {
	size, err := s.Size(ctx, name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > size {
		return fmt.Errorf("%w: %s: [%d, %d) of %d bytes", backend.ErrRange, name, off, off+int64(len(p)), size)
	}
	if len(p) == 0 {
		return nil
	}
	ro, rl := objstore.FrameSpan(size, off, len(p))
	raw := make([]byte, rl)
	if err := s.get(ctx, name, raw, ro); err != nil {
		return err
	}
	if err := objstore.Unframe(p, raw, size, off); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Delete removes name; S3 answers a missing one as a removed one.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.sizes.Forget(name)
	ctx, cancel := s.reqCtx(ctx, 0)
	defer cancel()
	s.stats.Deletes.Add(1)
	if err := s.c.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{}); err != nil {
		if err := s.errorf(err, "delete %s", name); !errors.Is(err, backend.ErrNotFound) {
			return err
		}
	}
	return nil
}

// List returns every name under prefix, sorted, across the listing's pages.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	return s.list(ctx, prefix, true)
}

// ListDirs returns the common prefixes right below prefix.
func (s *Store) ListDirs(ctx context.Context, prefix string) ([]string, error) {
	return s.list(ctx, prefix, false)
}

func (s *Store) list(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A listing is many requests (a page of 1000 names each): it is given
	// up when no page has come for the timeout, however long it is.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // also ends the listing goroutine if we stop early
	idle := time.AfterFunc(s.timeout, cancel)
	defer idle.Stop()
	var names []string
	s.stats.Lists.Add(1)
	for obj := range s.c.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: recursive}) {
		if obj.Err != nil {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if lctx.Err() != nil {
				return nil, fmt.Errorf("s3: list %s: no answer for %s: %w", prefix, s.timeout, context.DeadlineExceeded)
			}
			return nil, s.errorf(obj.Err, "list %s", prefix)
		}
		idle.Reset(s.timeout)
		if recursive != strings.HasSuffix(obj.Key, "/") {
			names = append(names, obj.Key)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if lctx.Err() != nil {
		return nil, fmt.Errorf("s3: list %s: no answer for %s: %w", prefix, s.timeout, context.DeadlineExceeded)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
