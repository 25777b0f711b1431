package local

import (
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
)

// keptChecksums bounds how many checksums of processed objects Head keeps:
// a key of about 100 bytes and a checksum of 12, a few hundred KiB in all,
// enough for the objects a portal user pages through (a study's bulk data
// URIs, each read several times) without keeping one per stored object.
const keptChecksums = 4096

// checksums holds the CRC-64/NVME of .dcm objects for Head, by key: that
// the file store took of each as it arrived (Hooks.Checksum), until the
// pipeline has processed it, and then, like every checksum Head had to take
// by reading the file (after a restart), among the last keptChecksums
// used. Reading an object back to checksum it is a read of every byte (a
// disk read: the file store writes around the page cache), which slowed the
// SCP's own writes and made every bulk data request of the portal (its
// bytes check, Head) read the whole object. A kept checksum stays true:
// local mode never writes a key twice, and a key that arrives again (its
// file removed by hand) brings its own. The zero value is ready to use.
type checksums struct {
	arrived sync.Map // key → checksum; until the pipeline has processed it

	once sync.Once
	lru  *lru.Cache[string, string]
}

func (c *checksums) kept() *lru.Cache[string, string] {
	c.once.Do(func() {
		var err error
		if c.lru, err = lru.New[string, string](keptChecksums); err != nil {
			panic(err) // only for a size below 1
		}
	})
	return c.lru
}

// store records the checksum the file store took of key as it arrived.
func (c *checksums) store(key, sum string) { c.arrived.Store(key, sum) }

// processed moves key's checksum from those the pipeline is still to
// process to those kept.
func (c *checksums) processed(key string) {
	if sum, ok := c.arrived.LoadAndDelete(key); ok {
		c.kept().Add(key, sum.(string))
	}
}

// keep keeps the checksum Head took of key.
func (c *checksums) keep(key, sum string) { c.kept().Add(key, sum) }

// load gives key's checksum, if known.
func (c *checksums) load(key string) (string, bool) {
	if sum, ok := c.arrived.Load(key); ok {
		return sum.(string), true
	}
	return c.kept().Get(key)
}
