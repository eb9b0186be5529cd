// Command s3put measures the S3 backend against a bare S3 client on the
// same server in one run: upload throughput of SCO-sized objects (vpool's
// framed PUT with its CRC-32C trailer against plain PUTs of the same
// sizes), and the bytes a 4 KiB random read fetches against the bytes it
// needs. Runs alternate, and medians of the repeats are reported.
//
//	go run ./bench/s3put -endpoint http://127.0.0.1:7070 -access A -secret S
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"vpool/objstore/s3"
)

func main() {
	endpoint := flag.String("endpoint", "http://127.0.0.1:7070", "S3 server")
	access := flag.String("access", "", "access key")
	secret := flag.String("secret", "", "secret key")
	size := flag.Int64("size", 64<<20, "object size (an SCO)")
	count := flag.Int("count", 8, "objects per run")
	conc := flag.Int("concurrency", 2, "uploads at once (engine.upload_concurrency)")
	repeats := flag.Int("repeats", 5, "runs of each side")
	reads := flag.Int("reads", 2000, "4 KiB random reads")
	dir := flag.String("dir", os.TempDir(), "where the source file lives")
	flag.Parse()
	ctx := context.Background()

	src := filepath.Join(*dir, "s3put.src")
	data := make([]byte, *size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		log.Fatal(err)
	}
	defer os.Remove(src)
	f, err := os.Open(src)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	store, err := s3.New(s3.Config{Endpoint: *endpoint, Bucket: "bench-vpool", AccessKey: *access, SecretKey: *secret})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Check(ctx); err != nil {
		log.Fatal(err)
	}
	bare, err := minio.New(hostOf(*endpoint), &minio.Options{Creds: credentials.NewStaticV4(*access, *secret, ""),
		BucketLookup: minio.BucketLookupPath})
	if err != nil {
		log.Fatal(err)
	}
	if ok, _ := bare.BucketExists(ctx, "bench-bare"); !ok {
		if err := bare.MakeBucket(ctx, "bench-bare", minio.MakeBucketOptions{}); err != nil {
			log.Fatal(err)
		}
	}

	run := func(put func(i int) error) float64 {
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan int)
		for range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if err := put(i); err != nil {
						log.Fatal(err)
					}
				}
			}()
		}
		for i := range *count {
			next <- i
		}
		close(next)
		wg.Wait()
		return float64(*size) * float64(*count) / time.Since(start).Seconds() / (1 << 20)
	}
	vpoolPut := func(i int) error {
		return store.Put(ctx, fmt.Sprintf("pool/0000000000000001/sco/%d", i), f, *size)
	}
	barePut := func(i int) error {
		_, err := bare.PutObject(ctx, "bench-bare", fmt.Sprintf("sco/%d", i), io.NewSectionReader(f, 0, *size), *size,
			minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true, PartSize: 256 << 20})
		return err
	}
	var vp, bp []float64
	for range *repeats {
		bp = append(bp, run(barePut))
		vp = append(vp, run(vpoolPut))
	}
	mv, mb := median(vp), median(bp)
	fmt.Printf("upload %d x %d MiB, %d at once: vpool %.0f MiB/s, bare PUT %.0f MiB/s: ratio %.2f (runs: vpool %.0f, bare %.0f)\n",
		*count, *size>>20, *conc, mv, mb, mv/mb, vp, bp)

	// 4 KiB random reads of the uploaded objects: bytes fetched per byte
	// needed, and latency against a bare ranged GET of 4 KiB
	st := store.Stats()
	g0 := st.GetBytes.Load()
	buf := make([]byte, 4096)
	var vl, bl []float64
	for i := range *reads {
		obj := i % *count
		off := r.Int64N(*size/4096) * 4096
		t0 := time.Now()
		if err := store.GetRange(ctx, fmt.Sprintf("pool/0000000000000001/sco/%d", obj), buf, off); err != nil {
			log.Fatal(err)
		}
		vl = append(vl, time.Since(t0).Seconds()*1e6)
		t0 = time.Now()
		var o minio.GetObjectOptions
		o.SetRange(off, off+4095)
		rd, err := bare.GetObject(ctx, "bench-bare", fmt.Sprintf("sco/%d", obj), o)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := io.ReadFull(rd, buf); err != nil {
			log.Fatal(err)
		}
		rd.Close()
		bl = append(bl, time.Since(t0).Seconds()*1e6)
	}
	got := st.GetBytes.Load() - g0
	fmt.Printf("random 4 KiB reads: %d fetched for %d needed: %.4fx; median latency vpool %.0f µs, bare ranged GET %.0f µs: ratio %.2f\n",
		got, *reads*4096, float64(got)/float64(*reads*4096), median(vl), median(bl), median(vl)/median(bl))
}

func hostOf(ep string) string {
	for _, p := range []string{"http://", "https://"} {
		if len(ep) > len(p) && ep[:len(p)] == p {
			return ep[len(p):]
		}
	}
	return ep
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}
