//! What kind of file a raw sample is, which MIME type Vertex AI is told, and how large Vertex
//! allows it to be: defined in the `autotune-layout` crate, which the trigger shares, and
//! re-exported here under its established path.

pub use autotune_layout::Modality;
