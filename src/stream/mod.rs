//! Image streams: a header, metadata, VBN-tagged data blocks, the
//! deallocation set, the relocation table and a checksummed trailer, each in
//! checksummed records (formats/stream.md).

pub mod check;
pub mod front;
pub mod header;
pub mod payload;
pub mod place;
pub mod reader;
pub mod record;
pub mod records;
pub mod seek;
pub mod set;
pub mod writer;

/// Raw data bytes per data record a dump aims for: large enough for good
/// compression and few headers, small enough for fine-grained random access
/// and bounded pipeline memory.
pub const DATA_RECORD_BYTES: usize = 256 * 1024;
/// Raw bytes per metadata record a dump aims for.
pub const META_RECORD_BYTES: usize = 256 * 1024;
/// Relocation entries per relocation record.
pub const RELOC_PER_RECORD: usize = 8192;
