//! The compression of the files a run writes for the next one to read (the line store of
//! incremental builds; see [`crate::lines`]): zstd at level 1, and gzip still read, for the
//! files of earlier versions.
//!
//! A first run writes every line it converted (about the size of the datasets: 160 MB for
//! 100,000 pairs of 1.5 KB), so the codec's speed is the first run's speed: gzip at its default
//! level compresses ordinary text at some 20–40 MB/s on one core, zstd at level 1 at several
//! hundred, to about the same size (`benches/README.md` has the figures). Readers tell the two
//! apart by their magic bytes, so a store written by an older autotune still serves.

use async_compression::Level;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// zstd's level: the fastest that still compresses text well.
const LEVEL: i32 = 1;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The extension of what [`encoder`] writes.
pub(crate) const EXTENSION: &str = "zst";

/// A compressor writing into memory, taken out in parts with `get_mut`.
pub(crate) type Encoder = async_compression::tokio::write::ZstdEncoder<Vec<u8>>;

/// A compressor into `buffer`.
pub(crate) fn encoder(buffer: Vec<u8>) -> Encoder {
    Encoder::with_quality(buffer, Level::Precise(LEVEL))
}

/// Decompresses `input`, zstd or gzip by its first bytes (every frame or member, as `zstdcat`
/// and `zcat` do); `Err` only when the first bytes cannot be read.
pub(crate) async fn decoder<R>(input: R) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let mut input = BufReader::new(input);
    let zstd = input.fill_buf().await?.starts_with(&ZSTD_MAGIC);
    Ok(if zstd {
        let mut d = async_compression::tokio::bufread::ZstdDecoder::new(input);
        d.multiple_members(true);
        boxed(d)
    } else {
        let mut d = async_compression::tokio::bufread::GzipDecoder::new(input);
        d.multiple_members(true);
        boxed(d)
    })
}

fn boxed<D: AsyncRead + Send + Unpin + 'static>(d: D) -> Box<dyn AsyncRead + Send + Unpin> {
    Box::new(BufReader::with_capacity(1 << 16, d))
}

/// Whether `input` could be read by [`decoder`]'s first look (for tests of callers).
#[cfg(test)]
pub(crate) fn is_zstd(bytes: &[u8]) -> bool {
    bytes.starts_with(&ZSTD_MAGIC)
}

/// `compressed` (zstd) as an earlier version wrote it: gzip (for tests of readers).
#[cfg(test)]
pub(crate) async fn as_gzip(compressed: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = Vec::new();
    decoder(std::io::Cursor::new(compressed.to_vec()))
        .await
        .unwrap()
        .read_to_end(&mut plain)
        .await
        .unwrap();
    let mut gz = async_compression::tokio::write::GzipEncoder::new(Vec::new());
    gz.write_all(&plain).await.unwrap();
    gz.shutdown().await.unwrap();
    gz.into_inner()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn read_all(bytes: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        decoder(std::io::Cursor::new(bytes))
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn zstd_is_written_and_both_codecs_are_read() {
        let text = b"ticket 1: the printer is on fire\n".repeat(1000);
        let mut e = encoder(Vec::new());
        e.write_all(&text).await.unwrap();
        e.shutdown().await.unwrap();
        let zstd = e.into_inner();
        assert!(is_zstd(&zstd));
        assert!(zstd.len() < text.len() / 10);
        assert_eq!(read_all(zstd.clone()).await, text);

        let mut gz = async_compression::tokio::write::GzipEncoder::new(Vec::new());
        gz.write_all(&text).await.unwrap();
        gz.shutdown().await.unwrap();
        let gzip = gz.into_inner();
        assert_eq!(
            read_all(gzip.clone()).await,
            text,
            "files of earlier versions"
        );

        // Two frames (or members) back to back read as one stream.
        let mut two = zstd.clone();
        two.extend_from_slice(&zstd);
        assert_eq!(read_all(two).await.len(), 2 * text.len());
    }
}
