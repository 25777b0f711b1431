// Package thumbnail renders the portal's series previews: one frame of a
// stored object as a small PNG, so that an operator can see that images
// arrived intact. It decodes native pixel data and JPEG Baseline, maps
// greyscale (MONOCHROME1, MONOCHROME2) through the Modality LUT (its
// sequence's or the rescale) then the first Window Center/Width by its
// VOI LUT Function, or without one the VOI LUT Sequence's first LUT, or
// without either the frame's range (pixel padding left out); an enhanced
// multi-frame object's from the frame's Per-Frame Functional Groups item,
// else the Shared one, else the top level. It
// shows 8-bit RGB as it is, and says "no preview" for anything else. Work is bounded by the frame, not
// the object: the header is read with the one element reader (package
// dataset) through ranged reads that skip bulk data (and the Per-Frame
// Functional Groups items of the other frames), then only the middle
// frame's bytes (MaxFrameBytes at most); a few requests render at a time,
// requests for one object wait on one render, and PNGs are cached within a
// bound in bytes.
package thumbnail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"strings"
	"sync"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"
)

// ErrNoPreview is returned (wrapped, with the reason) for an object this
// package does not render: its transfer syntax, its pixel layout, the
// size of its frame, or bytes that do not read as they say.
var ErrNoPreview = errors.New("no preview")

// Defaults of a Renderer. DefaultCacheBytes holds about 300 thumbnails
// of the largest kind (an RGB image of DefaultEdge × DefaultEdge that
// does not compress, three bytes a pixel: 108 KiB; TestLargestPreview),
// and about a thousand typical greyscale ones.
const (
	DefaultEdge        = 192
	DefaultConcurrency = 2
	DefaultCacheBytes  = 32 << 20
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

// Opener opens length bytes of a stored object from offset, as
// pipeline.ObjectReader.OpenRange does. A render asks for the header in a
// few growing ranges, then for the middle frame's bytes.
type Opener func(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)

// Renderer renders and caches thumbnails. The zero value is not usable:
// make one with New.
type Renderer struct {
	open  Opener
	edge  int
	slots chan struct{}

	cache  *pngCache
	flight singleflight.Group // renders under way, by key
	// joined, when set (tests), is called once a request that found no
	// cached answer waits on the render of key, its own or another's.
	joined func(key string)
}

type entry struct {
	png []byte
	err error // a no-preview answer is cached too: it will not change
}

// Options tune a Renderer; zero fields take the defaults.
type Options struct {
	Edge        int // the longer side of a thumbnail, in pixels
	Concurrency int // renders at a time; more wait
	// CacheBytes bounds the memory the cached answers (PNGs and
	// no-preview answers) take, each charged entryCost; a negative value
	// keeps none.
	CacheBytes int64
}

// New returns a Renderer reading objects through open.
func New(open Opener, o Options) *Renderer {
	if o.Edge <= 0 {
		o.Edge = DefaultEdge
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	return &Renderer{open: open, edge: o.Edge, slots: make(chan struct{}, o.Concurrency), cache: newPNGCache(max(o.CacheBytes, 0))}
}

// PNG returns the thumbnail of the object stored under key, whose size
// and transfer syntax the index knows. Objects never change under a key,
// so the answer is cached by key; requests for a key being rendered wait
// for that render (each as long as its own ctx lets it) rather than render
// it again.
func (r *Renderer) PNG(ctx context.Context, key string, size int64, ts string) ([]byte, error) {
	if b, err, ok := r.cached(key); ok {
		return b, err
	}
	if !Renderable(ts) {
		return nil, fmt.Errorf("thumbnail: %w: transfer syntax %s", ErrNoPreview, ts)
	}
	for {
		ch := r.flight.DoChan(key, func() (any, error) { return r.render(ctx, key, size) })
		if r.joined != nil {
			r.joined(key)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("thumbnail: %w", ctx.Err())
		case res := <-ch:
			var gone renderAbandoned
			if errors.As(res.Err, &gone) && ctx.Err() == nil {
				continue // the request that rendered it went away first: render it for this one
			}
			b, _ := res.Val.([]byte)
			return b, res.Err
		}
	}
}

// renderAbandoned is the answer of a render whose request went away (its
// context done), which the requests that waited on it do not take.
type renderAbandoned struct{ err error }

func (e renderAbandoned) Error() string { return e.err.Error() }
func (e renderAbandoned) Unwrap() error { return e.err }

// render renders the object under key for PNG, one request a key at a
// time, at most Concurrency at once.
func (r *Renderer) render(ctx context.Context, key string, size int64) ([]byte, error) {
	b, err := r.renderSlot(ctx, key, size)
	if err != nil && ctx.Err() != nil {
		return nil, renderAbandoned{err}
	}
	return b, err
}

func (r *Renderer) renderSlot(ctx context.Context, key string, size int64) ([]byte, error) {
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("thumbnail: %w", ctx.Err())
	}
	defer func() { <-r.slots }()
	if b, err, ok := r.cached(key); ok { // rendered while this one waited
		return b, err
	}
	// One range request a read: the header in growing chunks, then the
	// frame.
	at := dataset.RangeOpener(func(off, n int64) (io.ReadCloser, error) { return r.open(ctx, key, off, n) })
	b, err := Render(at, size, r.edge)
	if err == nil || errors.Is(err, ErrNoPreview) {
		r.keep(key, b, err)
	}
	return b, err
}

func (r *Renderer) cached(key string) ([]byte, error, bool) {
	en, ok := r.cache.get(key)
	return en.png, en.err, ok
}

// keep caches an answer; one already there stays (objects never change
// under a key), where it was in the order of use.
func (r *Renderer) keep(key string, b []byte, err error) {
	r.cache.add(key, entry{png: b, err: err})
}

// entryOverhead is what an answer is charged beyond its bytes: its list
// element, map entry and headers, about.
const entryOverhead = 160

// entryCost is the memory an answer is charged in the cache: its key, its
// PNG, its error's text and entryOverhead.
func entryCost(key string, png []byte, err error) int64 {
	n := int64(len(key) + len(png) + entryOverhead)
	if err != nil {
		n += int64(len(err.Error()))
	}
	return n
}

// pngCache keeps answers by key within a bound in bytes (entryCost), the
// least recently used dropped first.
type pngCache struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[string, entry]
	bytes int64 // held: the sum of the entries' costs
	max   int64
}

func newPNGCache(maxBytes int64) *pngCache {
	c := &pngCache{max: maxBytes}
	// The LRU's own bound, in entries, never binds: the cost in bytes
	// does, and each entry costs at least entryOverhead.
	l, err := simplelru.NewLRU(int(min(maxBytes/entryOverhead+1, math.MaxInt32)), func(key string, en entry) {
		c.bytes -= entryCost(key, en.png, en.err)
	})
	if err != nil {
		panic(fmt.Sprintf("thumbnail: %v", err)) // a positive size never fails
	}
	c.lru = l
	return c
}

func (c *pngCache) get(key string) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Get(key)
}

// add keeps en under key unless an answer is there already, or en alone
// is over the bound; it drops the least recently used until the rest fit.
func (c *pngCache) add(key string, en entry) {
	cost := entryCost(key, en.png, en.err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cost > c.max || c.lru.Contains(key) {
		return
	}
	for c.bytes+cost > c.max {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
	c.lru.Add(key, en)
	c.bytes += cost
}

// held is the bytes the cache is charged for now.
func (c *pngCache) held() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Render decodes the middle frame of the Part 10 object of size bytes in
// r and returns it as a PNG whose longer side is at most edge pixels. It
// reads the header up to Pixel Data, skipping bulk values, then the
// frame's bytes alone (a deflated data set is inflated up to the frame):
// memory and reads are bounded by the frame, whatever the object's size.
// Anything it cannot render is ErrNoPreview, never a panic; an error of r
// is returned as it is.
func Render(r io.ReaderAt, size int64, edge int) (png []byte, err error) {
	defer func() {
		// The renderer reads bytes from outside; a panic in it must cost
		// this preview, not the portal. Its value is told as panicvalue
		// tells it: the error reaches the portal's log.
		if p := recover(); p != nil {
			png, err = nil, fmt.Errorf("thumbnail: %w: the renderer failed: %s", ErrNoPreview, panicvalue.Describe(p))
		}
	}()
	o, err := readObject(r, size)
	if err != nil {
		return nil, err
	}
	if o.ts != tsJPEGBaseline {
		l, err := o.nativeGeometry()
		if err != nil {
			return nil, fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
		}
		img, err := native(o, l)
		if err != nil {
			return nil, err
		}
		return encode(shrink(img, edge))
	}
	frames, err := o.frames()
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
	}
	data, err := o.jpegFrame(frames, shown(frames))
	if err != nil {
		return nil, err
	}
	// The header says how large the image is: refuse one that would not
	// fit the bound before decoding allocates it.
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w: JPEG: %v", ErrNoPreview, err)
	}
	if uint64(cfg.Width)*uint64(cfg.Height) > maxFramePixels {
		return nil, fmt.Errorf("thumbnail: %w: JPEG of %d × %d pixels, above the %d previewed", ErrNoPreview, cfg.Width, cfg.Height, maxFramePixels)
	}
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w: JPEG: %v", ErrNoPreview, err)
	}
	if g, ok := img.(*image.Gray); ok {
		if err := greyscale(o); err != nil {
			return nil, err
		}
		// Decoded samples are stored values: rescaled (the Modality LUT,
		// PS3.3 C.11.1) before the window, as native ones are.
		p, err := params(o, 8)
		if err != nil {
			return nil, err
		}
		w := g.Rect.Dx()
		img = windowed(w, g.Rect.Dy(), func(i int) uint32 { return uint32(g.Pix[(i/w)*g.Stride+i%w]) }, p)
	}
	return encode(shrink(img, edge))
}

// pixelParams are the attributes that turn stored values into grey levels.
type pixelParams struct {
	slope, intercept float64
	center, width    float64 // width 0: window over the frame's range
	voi              voiFunction
	signed           bool
	bitsStored       int
	shift            int  // where the stored bits start in a sample: High Bit + 1 - Bits Stored
	invert           bool // MONOCHROME1
	modality         *lut // the Modality LUT Sequence's, in place of the rescale
	voiLUT           *lut // the VOI LUT Sequence's, without a window
	// padding: stored values from padLo to padHi (inclusive) are padding
	// (Pixel Padding Value and Range Limit), left out of the window over
	// the frame's range.
	padding      bool
	padLo, padHi float64
}

// voiFunction is VOI LUT Function (0028,1056): how a window maps values
// to grey levels (PS3.3 C.11.2.1.3).
type voiFunction int

const (
	voiLinear      voiFunction = iota // LINEAR, the default (C.11.2.1.2.1)
	voiLinearExact                    // LINEAR_EXACT (C.11.2.1.3.2)
	voiSigmoid                        // SIGMOID (C.11.2.1.3.1)
)

// params reads the attributes of o that map its stored values of
// bitsAllocated to grey levels: the rescale and Modality LUT of its Pixel
// Value Transformation, the window, VOI LUT Function and VOI LUT of its
// Frame VOI LUT, each from the frame's Per-Frame Functional Groups item,
// else the Shared one, else the top level (object.macro), the rest from
// the top level. Of the VOI transformations, the first
// window counts, then the VOI LUT Sequence's first item, as dcmj2pnm +Wi 1
// and +Wl 1 choose them: PS3.3 C.11.2.1 leaves the choice between the two
// to the application (both are "alternative views"), and the window is
// the one the modality wrote for display in all but a few objects. A LUT
// that does not read as its descriptor says is no preview.
func params(o *object, bitsAllocated int) (pixelParams, error) {
	p := pixelParams{slope: 1, bitsStored: bitsAllocated}
	pvt, voi := o.macro(pixelValueTransformation), o.macro(frameVOILUT)
	if v, ok := pvt.num(tagRescaleSlope); ok && v != 0 {
		p.slope = v
	}
	if v, ok := pvt.num(tagRescaleIntercept); ok {
		p.intercept = v
	}
	switch strings.TrimSpace(voi.str(tagVOILUTFunction)) {
	case "LINEAR_EXACT":
		p.voi = voiLinearExact
	case "SIGMOID":
		p.voi = voiSigmoid
	}
	if c, ok := voi.num(tagWindowCenter); ok {
		// LINEAR needs a width of at least 1, the others above 0; a window
		// that does not is ignored, as if absent.
		if w, ok := voi.num(tagWindowWidth); ok && (w >= 1 || w > 0 && p.voi != voiLinear) {
			p.center, p.width = c, w
		}
	}
	if v, ok := o.int(tagPixelRepresentation); ok && v == 1 {
		p.signed = true
	}
	if v, ok := o.int(tagBitsStored); ok && v > 0 && v <= bitsAllocated {
		p.bitsStored = v
	}
	p.invert = strings.TrimSpace(o.str(tagPhotometric)) == "MONOCHROME1"
	p.padding, p.padLo, p.padHi = o.padding(p.signed)
	in := dataset.LUTInput{SignedPixels: p.signed, BitsAllocated: bitsAllocated, BitsStored: p.bitsStored, Slope: p.slope, Intercept: p.intercept}
	var err error
	if p.modality, err = o.lutOf(pvt, tagModalityLUTSequence, in); err != nil {
		return p, err
	}
	if p.width == 0 {
		// The VOI LUT maps the Modality LUT's output: its LUT's, else the
		// rescale's.
		in.ModalityLUT = p.modality != nil
		if p.voiLUT, err = o.lutOf(voi, tagVOILUTSequence, in); err != nil {
			return p, err
		}
	}
	return p, nil
}

// padding reads Pixel Padding Value (0028,0120) and Pixel Padding Range
// Limit (0028,0121) by PS3.3 C.7.5.1.1.2: stored values, before the
// Modality LUT, the value alone padding, or with the limit the range
// between the two inclusive (the value is the lower for MONOCHROME2, the
// higher for MONOCHROME1: either order is taken). Their VR, "US or SS", is
// Pixel Representation's (signed), so they are read by it whatever the VR
// sent, as the LUT descriptors' first value mapped is (a US -2000 over
// signed pixels is 63536 sent, -2000 meant). A limit without a value is
// nothing (the value is required with it).
func (o *object) padding(signed bool) (ok bool, lo, hi float64) {
	word := func(tag uint32) (float64, bool) {
		a, ok := o.top.attrs[tag]
		if !ok || len(a.value) < 2 || !a.vr.Is("US") && !a.vr.Is("SS") {
			return 0, false
		}
		w := o.order.Uint16(a.value)
		if signed {
			return float64(int16(w)), true
		}
		return float64(w), true
	}
	v, ok := word(tagPixelPaddingValue)
	if !ok {
		return false, 0, 0
	}
	lim, ok := word(tagPixelPaddingRangeLimit)
	if !ok {
		lim = v
	}
	return true, min(v, lim), max(v, lim)
}

// lut is a Modality or VOI LUT (PS3.3 C.11.1, C.11.2): entries mapped
// from first, of bits each.
type lut struct {
	first   int
	bits    int
	entries []uint16
}

// at maps x through the LUT: a value below the first mapped to the first
// entry, one above the last mapped to the last (C.11.1.1.1), one between
// two integers as the lower.
func (l *lut) at(x float64) float64 {
	i := math.Floor(x) - float64(l.first)
	return float64(l.entries[int(max(0, min(i, float64(len(l.entries)-1))))])
}

// lutOf reads the LUT of the first item of the sequence seq in set (nil
// when it has none) by PS3.3 C.11.1.1.1: the LUT Descriptor's number
// of entries (0: 65536) and bits per entry (8 to 16) unsigned, its first
// value mapped signed where the values the LUT maps are (in: the pixels',
// and for the VOI LUT the Modality LUT's or rescale's output), whatever
// its VR (dataset.LUTFirstValueSigned), the LUT Data of 16-bit words in
// the data set's byte order, 8-bit entries one a word or two (the first in
// the low byte). LUT Data shorter than its descriptor says is its words,
// one entry each, as dcmj2pnm draws it (an image rather than none); a
// descriptor that does not read, or data of no whole word, is no preview.
func (o *object) lutOf(set *attrSet, seq uint32, in dataset.LUTInput) (*lut, error) {
	item := set.luts[seq]
	if item == nil {
		return nil, nil
	}
	name, kind := "VOI LUT", dataset.VOILUT
	if seq == tagModalityLUTSequence {
		name, kind = "Modality LUT", dataset.StoredValueLUT
	}
	d, data := item.descriptor, item.data.value
	if len(d.value) < 6 || data == nil {
		return nil, fmt.Errorf("thumbnail: %w: %s without a LUT Descriptor of three values and LUT Data", ErrNoPreview, name)
	}
	vr := d.vr.String()
	if o.dec.Implicit() {
		vr = ""
	}
	signed := dataset.LUTFirstValueSigned(dataset.ForRendering, kind, in, vr)
	var v [3]int
	for i := range v {
		w := o.order.Uint16(d.value[2*i:])
		v[i] = int(w)
		if signed && !dataset.LUTDescriptorUnsigned(i) {
			v[i] = int(int16(w))
		}
	}
	n, bits := v[0], v[2]
	if n == 0 {
		n = maxLUTEntries
	}
	if bits < 8 || bits > 16 {
		return nil, fmt.Errorf("thumbnail: %w: %s of %d bits an entry, not 8 to 16", ErrNoPreview, name, bits)
	}
	// Two entries a word: 8-bit entries in the words they fill, neither
	// more nor fewer (as dcmj2pnm tells them apart; other data shorter
	// than an entry a word is its words).
	packed := bits == 8 && len(data) < 2*n && len(data)/2 == (n+1)/2
	if !packed && len(data) < 2*n {
		if len(data) < 2 {
			return nil, fmt.Errorf("thumbnail: %w: %s of %d entries of %d bits in %d bytes of LUT Data", ErrNoPreview, name, n, bits, len(data))
		}
		n = len(data) / 2 // shorter than said: the words it has
	}
	l := &lut{first: v[1], bits: bits, entries: make([]uint16, n)}
	mask := uint16(1<<bits - 1)
	for i := range l.entries {
		if packed {
			l.entries[i] = o.order.Uint16(data[2*(i/2):]) >> (8 * (i % 2)) & mask
		} else {
			l.entries[i] = o.order.Uint16(data[2*i:]) & mask
		}
	}
	return l, nil
}

// native renders the middle frame of native pixel data: 8-bit RGB (either
// planar configuration), or one sample per pixel windowed to grey. The
// layout is checked before the frame is read.
func native(o *object, l nativeLayout) (image.Image, error) {
	w, h := int(l.cols), int(l.rows)
	n := w * h
	photometric := strings.TrimSpace(o.str(tagPhotometric))
	rgb := l.samples == 3 && photometric == "RGB" && l.bits == 8
	if !rgb && l.samples != 1 {
		return nil, fmt.Errorf("thumbnail: %w: %d samples per pixel (%s)", ErrNoPreview, l.samples, photometric)
	}
	var p pixelParams
	if !rgb {
		if err := greyscale(o); err != nil {
			return nil, err
		}
		var err error
		if p, err = params(o, int(l.bits)); err != nil {
			return nil, err
		}
		if p.shift, err = highBit(o, p.bitsStored, int(l.bits)); err != nil {
			return nil, err
		}
	}
	raw, err := o.nativeFrame(l, shown(l.frames))
	if err != nil {
		return nil, err
	}
	if rgb {
		planar, _ := o.int(tagPlanarConfiguration)
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for i := range n {
			r, g, b := raw[3*i], raw[3*i+1], raw[3*i+2]
			if planar == 1 {
				r, g, b = raw[i], raw[n+i], raw[2*n+i]
			}
			img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = r, g, b, 255
		}
		return img, nil
	}
	var sample func(i int) uint32
	switch l.bits {
	case 8:
		sample = func(i int) uint32 { return uint32(raw[i]) }
	case 16:
		sample = func(i int) uint32 { return uint32(o.order.Uint16(raw[2*i:])) }
	default:
		sample = func(i int) uint32 { return o.order.Uint32(raw[4*i:]) }
	}
	return windowed(w, h, sample, p), nil
}

// greyscale refuses one sample a pixel that is not grey: MONOCHROME1 and
// MONOCHROME2 are (PS3.3 C.7.6.3.1.2); PALETTE COLOR holds indices into
// its colour tables, which drawn as grey look like another image.
func greyscale(o *object) error {
	switch ph := strings.TrimSpace(o.str(tagPhotometric)); ph {
	case "MONOCHROME1", "MONOCHROME2":
		return nil
	default:
		return fmt.Errorf("thumbnail: %w: one sample a pixel in %q, not greyscale", ErrNoPreview, ph)
	}
}

// highBit is where the stored bits of native samples of bitsAllocated
// start: High Bit (0028,0102) is their top one (PS3.5 8.1.1), Bits Stored
// - 1 in what the standard writes now, higher in older objects (12 bits
// stored in the top of 16); without High Bit, the lowest. One below Bits
// Stored - 1 or past the sample places them nowhere: no preview, as
// DCMTK refuses it, rather than other bits drawn.
func highBit(o *object, bitsStored, bitsAllocated int) (int, error) {
	hb, ok := o.int(tagHighBit)
	if !ok {
		return 0, nil
	}
	if hb < bitsStored-1 || hb >= bitsAllocated {
		return 0, fmt.Errorf("thumbnail: %w: High Bit %d with Bits Stored %d in %d bits allocated", ErrNoPreview, hb, bitsStored, bitsAllocated)
	}
	return hb + 1 - bitsStored, nil
}

// stored is the stored value of a sample (moved down from High Bit,
// sign-extended from Bits Stored).
func (p pixelParams) stored(v uint32) float64 {
	v >>= uint(p.shift)
	bits := uint(p.bitsStored)
	if bits < 32 {
		v &= 1<<bits - 1
	}
	x := float64(v)
	if p.signed && bits > 0 && bits <= 32 && v&(1<<(bits-1)) != 0 {
		x -= math.Ldexp(1, int(bits))
	}
	return x
}

// padded reports whether the stored value x is padding.
func (p pixelParams) padded(x float64) bool {
	return p.padding && x >= p.padLo && x <= p.padHi
}

// value is a stored value x in modality units: through the Modality LUT,
// or rescaled.
func (p pixelParams) value(x float64) float64 {
	if p.modality != nil {
		return p.modality.at(x)
	}
	return x*p.slope + p.intercept
}

// windowed maps the samples of w × h pixels (sample(i) of pixel i, in
// row order, as stored) to grey levels in modality units (p.value) through
// the window and its VOI LUT Function (PS3.3 C.11.2.1.2.1, C.11.2.1.3), or
// the VOI LUT (C.11.2.1.1: its entries span 0 to 2^bits - 1), or without
// either through the window that spans the values' own range (min-max: the
// lowest black, the highest white), padding left out (C.7.5.1.1.2 Note 2:
// it lies outside the image's range, which it would stretch; a frame of
// padding alone spans its own). Padding is drawn through the window as
// any value is: below or above the image's range, black or white. Values
// are computed where they are needed, twice without a window, rather than
// held: a float64 per pixel was 128 MiB at maxFramePixels.
func windowed(w, h int, sample func(i int) uint32, p pixelParams) *image.Gray {
	value := func(i int) float64 { return p.value(p.stored(sample(i))) }
	if p.width == 0 && p.voiLUT == nil {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, pad := range []bool{p.padding, false} {
			for i := 0; i < w*h; i++ {
				x := p.stored(sample(i))
				if pad && p.padded(x) {
					continue
				}
				v := p.value(x)
				lo, hi = min(lo, v), max(hi, v)
			}
			if lo <= hi {
				break
			}
		}
		// The LINEAR window of C.11.2.1.2.1 that maps lo to 0 and hi to
		// 255 (its Note 4).
		p.voi, p.center, p.width = voiLinear, (lo+hi+1)/2, hi-lo+1
	}
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		g := p.grey(value(i))
		if p.invert {
			g = 255 - g
		}
		img.Pix[i] = uint8(math.Round(g))
	}
	return img
}

// grey maps x, in modality units, through the window to 0..255 by the
// VOI LUT Function's formula.
func (p pixelParams) grey(x float64) float64 {
	const top = 255
	if p.width == 0 && p.voiLUT != nil {
		return p.voiLUT.at(x) / float64(uint32(1)<<p.voiLUT.bits-1) * top
	}
	c, w := p.center, p.width
	switch p.voi {
	case voiLinearExact: // C.11.2.1.3.2
		return math.Max(0, math.Min(top, ((x-c)/w+0.5)*top))
	case voiSigmoid: // C.11.2.1.3.1
		return top / (1 + math.Exp(-4*(x-c)/w))
	}
	// LINEAR, C.11.2.1.2.1: the half-unit bias lets an integer center
	// split a window of even width (128, 256: 0..255 unchanged).
	switch {
	case x <= c-0.5-(w-1)/2:
		return 0
	case x > c-0.5+(w-1)/2:
		return top
	}
	return ((x-(c-0.5))/(w-1) + 0.5) * top
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

// encode writes img as a PNG; an image of no pixels (a JPEG whose frame
// decodes to nothing, found by FuzzRender) is no preview, not an encoder's
// error.
func encode(img image.Image) ([]byte, error) {
	if img.Bounds().Empty() {
		return nil, fmt.Errorf("thumbnail: %w: an image of %d × %d pixels", ErrNoPreview, img.Bounds().Dx(), img.Bounds().Dy())
	}
	var b bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&b, img); err != nil {
		return nil, fmt.Errorf("thumbnail: encode: %w", err)
	}
	return b.Bytes(), nil
}
