package flist

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Version is the format version this package writes and reads.
const Version = 1

// Limits enforced by the decoder. They bound memory and work for any input.
const (
	MaxName       = 255
	MaxTarget     = 4095
	MaxXattrs     = 1024
	MaxXattrName  = 255
	MaxXattrValue = 64 << 10
	MaxEntries    = 1 << 28
	MaxChunks     = 1 << 30
	MaxBody       = 4 << 30
	MaxBlockRaw   = 64 << 20
	MaxMetaValue  = 4 << 20
	MaxMeta       = 1024
	MaxSignatures = 256
	BlockEntries  = 256 // entries per block the writer uses
	maxFileSize   = 1 << 50
)

// ErrCorrupt reports an flist that is malformed, truncated or breaks a rule
// of the format. Decoding never panics; it returns an error wrapping this.
var ErrCorrupt = errors.New("flist corrupt")

var magic = [8]byte{'z', 'o', 's', 'f', 'l', 'i', 's', 't'}
var sigMagic = [8]byte{'z', 'o', 's', 's', 'i', 'g', 's', 0}

const (
	headerSize  = 24
	sectionSize = 24
	secMeta     = 1
	secEntries  = 2
	secChunks   = 3
	nSections   = 3
	methodRaw   = 0
	methodZstd  = 1
	flagLink    = 1
	flagXattrs  = 2
)

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// dec is a strict cursor over bytes: every read is bounds-checked and
// varints must be minimal, so one value has one encoding.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = corrupt(format, args...)
	}
}

func (d *dec) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated varint")
		return 0
	}
	if n != uvarintLen(v) {
		d.fail("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *dec) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail("length %d exceeds limit or input", n)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8() byte {
	b := d.fixed(1)
	if b == nil {
		return 0
	}
	return b[0]
}
func (d *dec) u16() uint16 {
	b := d.fixed(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}
func (d *dec) u32() uint32 {
	b := d.fixed(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}
func (d *dec) u64() uint64 {
	b := d.fixed(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

type enc struct{ b []byte }

func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) varint(v int64)   { e.uvarint(uint64(v<<1) ^ uint64(v>>63)) }
func (e *enc) bytes(v []byte)   { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) str(v string)     { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) u16(v uint16)     { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32)     { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64)     { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

// A block is: method (1 byte) | raw length (u32) | payload.
func packBlock(e *zstd.Encoder, raw []byte) []byte {
	out := make([]byte, 5, 5+len(raw)/2)
	out[0] = methodZstd
	binary.LittleEndian.PutUint32(out[1:], uint32(len(raw)))
	out = e.EncodeAll(raw, out)
	if len(out) >= 5+len(raw) {
		out = append(out[:5], raw...)
		out[0] = methodRaw
	}
	return out
}

func unpackBlock(d *zstd.Decoder, b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, corrupt("block truncated")
	}
	n := binary.LittleEndian.Uint32(b[1:])
	if n > MaxBlockRaw {
		return nil, corrupt("block of %d bytes", n)
	}
	switch b[0] {
	case methodRaw:
		if uint32(len(b)-5) != n {
			return nil, corrupt("raw block length")
		}
		return b[5:], nil
	case methodZstd:
		raw, err := d.DecodeAll(b[5:], make([]byte, 0, n))
		if err != nil {
			return nil, corrupt("block: %v", err)
		}
		if uint32(len(raw)) != n {
			return nil, corrupt("block decodes to %d bytes, header says %d", len(raw), n)
		}
		return raw, nil
	}
	return nil, corrupt("block method %d", b[0])
}

func newBlockEncoder() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		panic(err)
	}
	return e
}

func newBlockDecoder() *zstd.Decoder {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxBlockRaw))
	if err != nil {
		panic(err)
	}
	return d
}
