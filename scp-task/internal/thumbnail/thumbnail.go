// Package thumbnail renders the portal's series previews: one frame of a
// stored object as a small PNG, so that an operator can see that images
// arrived intact. It decodes native pixel data and JPEG Baseline with
// github.com/suyashkumar/dicom and the standard library, windows greyscale
// from Window Center/Width (after the modality rescale), and says "no
// preview" for anything else. Work is bounded: objects above a size limit
// are refused before a byte is read, one frame is decoded per request, a
// few requests decode at a time, and PNGs are cached.
package thumbnail

import (
	"bytes"
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

// ErrNoPreview is returned (wrapped, with the reason) for an object this
// package does not render: its transfer syntax, its size, its pixel
// layout, or a parse failure.
var ErrNoPreview = errors.New("no preview")

// Defaults of a Renderer.
const (
	DefaultMaxObjectBytes = 64 << 20
	DefaultEdge           = 192
	DefaultConcurrency    = 2
	DefaultCacheEntries   = 512
)

// Transfer syntaxes rendered: native pixel data, and JPEG Baseline.
const (
	tsImplicitLE   = "1.2.840.10008.1.2"
	tsExplicitLE   = "1.2.840.10008.1.2.1"
	tsExplicitBE   = "1.2.840.10008.1.2.2"
	tsDeflatedLE   = "1.2.840.10008.1.2.1.99"
	tsJPEGBaseline = "1.2.840.10008.1.2.4.50"
)

// Renderable reports whether objects of transfer syntax ts get a preview.
func Renderable(ts string) bool {
	switch ts {
	case tsImplicitLE, tsExplicitLE, tsExplicitBE, tsDeflatedLE, tsJPEGBaseline:
		return true
	}
	return false
}

// Opener opens a stored object by key.
type Opener func(ctx context.Context, key string) (io.ReadCloser, error)

// Renderer renders and caches thumbnails. The zero value is not usable:
// make one with New.
type Renderer struct {
	open           Opener
	maxObjectBytes int64
	edge           int
	slots          chan struct{}

	mu      sync.Mutex
	cache   map[string]*list.Element // key → entry in lru
	lru     *list.List               // front: most recently used
	maxKeep int
}

type entry struct {
	key string
	png []byte
	err error // a no-preview answer is cached too: it will not change
}

// Options tune a Renderer; zero fields take the defaults.
type Options struct {
	MaxObjectBytes int64 // larger objects get no preview
	Edge           int   // the longer side of a thumbnail, in pixels
	Concurrency    int   // renders at a time; more wait
	CacheEntries   int   // PNGs (and no-preview answers) kept
}

// New returns a Renderer reading objects through open.
func New(open Opener, o Options) *Renderer {
	if o.MaxObjectBytes <= 0 {
		o.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if o.Edge <= 0 {
		o.Edge = DefaultEdge
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.CacheEntries <= 0 {
		o.CacheEntries = DefaultCacheEntries
	}
	return &Renderer{open: open, maxObjectBytes: o.MaxObjectBytes, edge: o.Edge, slots: make(chan struct{}, o.Concurrency),
		cache: map[string]*list.Element{}, lru: list.New(), maxKeep: o.CacheEntries}
}

// PNG returns the thumbnail of the object stored under key, whose size
// and transfer syntax the index knows. Objects never change under a key,
// so the answer is cached by key.
func (r *Renderer) PNG(ctx context.Context, key string, size int64, ts string) ([]byte, error) {
	if b, err, ok := r.cached(key); ok {
		return b, err
	}
	if !Renderable(ts) {
		return nil, fmt.Errorf("thumbnail: %w: transfer syntax %s", ErrNoPreview, ts)
	}
	if size > r.maxObjectBytes {
		return nil, fmt.Errorf("thumbnail: %w: object of %d bytes is above the %d byte limit", ErrNoPreview, size, r.maxObjectBytes)
	}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("thumbnail: %w", ctx.Err())
	}
	defer func() { <-r.slots }()
	if b, err, ok := r.cached(key); ok { // rendered while this one waited
		return b, err
	}
	rc, err := r.open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("thumbnail: open: %w", err)
	}
	defer rc.Close()
	b, err := Render(io.LimitReader(rc, size), size, r.edge)
	if err == nil || errors.Is(err, ErrNoPreview) {
		r.keep(key, b, err)
	}
	return b, err
}

func (r *Renderer) cached(key string) ([]byte, error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok {
		return nil, nil, false
	}
	r.lru.MoveToFront(e)
	en := e.Value.(*entry)
	return en.png, en.err, true
}

func (r *Renderer) keep(key string, b []byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[key]; ok {
		return
	}
	r.cache[key] = r.lru.PushFront(&entry{key: key, png: b, err: err})
	for r.lru.Len() > r.maxKeep {
		old := r.lru.Back()
		r.lru.Remove(old)
		delete(r.cache, old.Value.(*entry).key)
	}
}

// Render decodes the middle frame of the Part 10 object in r (size bytes)
// and returns it as a PNG whose longer side is at most edge pixels.
// Anything it cannot render is ErrNoPreview, never a panic. It allocates
// size bytes before reading: the caller bounds size.
func Render(r io.Reader, size int64, edge int) (png []byte, err error) {
	defer func() {
		// The parser reads bytes from outside; a panic in it must cost
		// this preview, not the portal.
		if p := recover(); p != nil {
			png, err = nil, fmt.Errorf("thumbnail: %w: the parser failed: %v", ErrNoPreview, p)
		}
	}()
	// One buffer of the object's size (the Renderer refuses objects above
	// its limit before reading): io.ReadAll grew its buffer by copying, to
	// about twice that in all.
	obj := make([]byte, max(size, 0))
	n, err := io.ReadFull(r, obj)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("thumbnail: read: %w", err)
	}
	obj = obj[:n] // a shorter object is checked as it is
	if err := checkStructure(obj); err != nil {
		return nil, fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
	}
	// Parsed without decoding the pixel data: a native frame is cut from
	// the element by its attributes (nativeGeometry); JPEG Baseline frames
	// are the element's fragments, parsed again for them.
	ds, err := dicom.Parse(bytes.NewReader(obj), int64(len(obj)), nil, dicom.SkipProcessingPixelDataValue())
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w: %v", ErrNoPreview, err)
	}
	ts := str(&ds, tag.TransferSyntaxUID)
	if !Renderable(ts) {
		return nil, fmt.Errorf("thumbnail: %w: transfer syntax %s", ErrNoPreview, ts)
	}
	if ts != tsJPEGBaseline {
		l, err := nativeGeometry(&ds)
		if err != nil {
			return nil, fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
		}
		var order binary.ByteOrder = binary.LittleEndian
		if ts == tsExplicitBE {
			order = binary.BigEndian
		}
		img, err := native(&ds, l, order)
		if err != nil {
			return nil, err
		}
		return encode(shrink(img, edge))
	}
	if ds, err = dicom.Parse(bytes.NewReader(obj), int64(len(obj)), nil); err != nil {
		return nil, fmt.Errorf("thumbnail: %w: %v", ErrNoPreview, err)
	}
	el, err := ds.FindElementByTag(tag.PixelData)
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w: no pixel data", ErrNoPreview)
	}
	info, ok := el.Value.GetValue().(dicom.PixelDataInfo)
	if !ok || len(info.Frames) == 0 || info.ParseErr != nil {
		return nil, fmt.Errorf("thumbnail: %w: pixel data not decodable", ErrNoPreview)
	}
	f := info.Frames[len(info.Frames)/2]
	if !f.Encapsulated {
		return nil, fmt.Errorf("thumbnail: %w: native pixel data in %s", ErrNoPreview, ts)
	}
	img, err := jpeg.Decode(bytes.NewReader(f.EncapsulatedData.Data))
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w: JPEG: %v", ErrNoPreview, err)
	}
	if g, ok := img.(*image.Gray); ok {
		img = windowed(grayValues(g), g.Rect.Dx(), g.Rect.Dy(), params(&ds, 8))
	}
	return encode(shrink(img, edge))
}

// pixelParams are the attributes that turn stored values into grey levels.
type pixelParams struct {
	slope, intercept float64
	center, width    float64 // width 0: window over the frame's range
	signed           bool
	bitsStored       int
	invert           bool // MONOCHROME1
}

func params(ds *dicom.Dataset, bitsAllocated int) pixelParams {
	p := pixelParams{slope: 1, bitsStored: bitsAllocated}
	if v, ok := num(ds, tag.RescaleSlope); ok && v != 0 {
		p.slope = v
	}
	if v, ok := num(ds, tag.RescaleIntercept); ok {
		p.intercept = v
	}
	if c, ok := num(ds, tag.WindowCenter); ok {
		if w, ok := num(ds, tag.WindowWidth); ok && w >= 1 {
			p.center, p.width = c, w
		}
	}
	if v, ok := ints(ds, tag.PixelRepresentation); ok && v == 1 {
		p.signed = true
	}
	if v, ok := ints(ds, tag.BitsStored); ok && v > 0 && v <= bitsAllocated {
		p.bitsStored = v
	}
	p.invert = strings.TrimSpace(str(ds, tag.PhotometricInterpretation)) == "MONOCHROME1"
	return p
}

// native renders the middle frame of native pixel data: 8-bit RGB (either
// planar configuration), or one sample per pixel windowed to grey.
func native(ds *dicom.Dataset, l nativeLayout, order binary.ByteOrder) (image.Image, error) {
	raw := l.frame(l.frames / 2)
	w, h := int(l.cols), int(l.rows)
	n := w * h
	photometric := strings.TrimSpace(str(ds, tag.PhotometricInterpretation))
	switch {
	case l.samples == 3 && photometric == "RGB" && l.bits == 8:
		planar, _ := ints(ds, tag.PlanarConfiguration)
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for i := range n {
			r, g, b := raw[3*i], raw[3*i+1], raw[3*i+2]
			if planar == 1 {
				r, g, b = raw[i], raw[n+i], raw[2*n+i]
			}
			img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = r, g, b, 255
		}
		return img, nil
	case l.samples != 1:
		return nil, fmt.Errorf("thumbnail: %w: %d samples per pixel (%s)", ErrNoPreview, l.samples, photometric)
	}
	p := params(ds, int(l.bits))
	vals := make([]float64, n)
	for i := range vals {
		var v uint32
		switch l.bits {
		case 8:
			v = uint32(raw[i])
		case 16:
			v = uint32(order.Uint16(raw[2*i:]))
		default:
			v = order.Uint32(raw[4*i:])
		}
		vals[i] = p.value(v)
	}
	return windowed(vals, w, h, p), nil
}

// value is a stored value in modality units (rescaled, sign-extended
// from Bits Stored).
func (p pixelParams) value(v uint32) float64 {
	bits := uint(p.bitsStored)
	if bits < 32 {
		v &= 1<<bits - 1
	}
	x := float64(v)
	if p.signed && bits > 0 && bits <= 32 && v&(1<<(bits-1)) != 0 {
		x -= math.Ldexp(1, int(bits))
	}
	return x*p.slope + p.intercept
}

func grayValues(g *image.Gray) []float64 {
	w, h := g.Rect.Dx(), g.Rect.Dy()
	out := make([]float64, 0, w*h)
	for y := 0; y < h; y++ {
		for _, v := range g.Pix[y*g.Stride : y*g.Stride+w] {
			out = append(out, float64(v))
		}
	}
	return out
}

// windowed maps values to grey levels through the window (PS3.3
// C.11.2.1.2.1, linear), or over the values' own range without one.
func windowed(vals []float64, w, h int, p pixelParams) *image.Gray {
	lo, hi := p.center-p.width/2, p.center+p.width/2
	if p.width == 0 {
		lo, hi = math.Inf(1), math.Inf(-1)
		for _, v := range vals {
			lo, hi = min(lo, v), max(hi, v)
		}
		if hi <= lo {
			hi = lo + 1
		}
	}
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		g := (vals[i] - lo) / (hi - lo) * 255
		g = math.Max(0, math.Min(255, g))
		if p.invert {
			g = 255 - g
		}
		img.Pix[i] = uint8(math.Round(g))
	}
	return img
}

// shrink scales img down (box filter) so its longer side is at most edge.
func shrink(img image.Image, edge int) image.Image {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= edge && h <= edge {
		return img
	}
	scale := float64(max(w, h)) / float64(edge)
	nw, nh := max(1, int(float64(w)/scale)), max(1, int(float64(h)/scale))
	out := image.NewRGBA(image.Rect(0, 0, nw, nh))
	for y := 0; y < nh; y++ {
		y0, y1 := b.Min.Y+y*h/nh, b.Min.Y+max((y+1)*h/nh, y*h/nh+1)
		for x := 0; x < nw; x++ {
			x0, x1 := b.Min.X+x*w/nw, b.Min.X+max((x+1)*w/nw, x*w/nw+1)
			var r, g, bl, n uint32
			for yy := y0; yy < y1; yy++ {
				for xx := x0; xx < x1; xx++ {
					cr, cg, cb, _ := img.At(xx, yy).RGBA()
					r, g, bl, n = r+cr, g+cg, bl+cb, n+1
				}
			}
			out.Set(x, y, color.RGBA64{uint16(r / n), uint16(g / n), uint16(bl / n), 0xffff})
		}
	}
	return out
}

func encode(img image.Image) ([]byte, error) {
	var b bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&b, img); err != nil {
		return nil, fmt.Errorf("thumbnail: encode: %w", err)
	}
	return b.Bytes(), nil
}

func str(ds *dicom.Dataset, t tag.Tag) string {
	el, err := ds.FindElementByTag(t)
	if err != nil {
		return ""
	}
	if s, ok := el.Value.GetValue().([]string); ok && len(s) > 0 {
		return strings.TrimRight(s[0], " \x00")
	}
	return ""
}

// num reads the first value of a decimal or integer string attribute.
func num(ds *dicom.Dataset, t tag.Tag) (float64, bool) {
	s := strings.TrimSpace(str(ds, t))
	if i := strings.IndexByte(s, '\\'); i >= 0 {
		s = s[:i]
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return v, err == nil && !math.IsNaN(v) && !math.IsInf(v, 0)
}

func ints(ds *dicom.Dataset, t tag.Tag) (int, bool) {
	el, err := ds.FindElementByTag(t)
	if err != nil {
		return 0, false
	}
	if v, ok := el.Value.GetValue().([]int); ok && len(v) > 0 {
		return v[0], true
	}
	return 0, false
}
