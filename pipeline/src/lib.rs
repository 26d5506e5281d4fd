//! autotune: retrains Gemini on Vertex AI whenever enough new labelled data lands in a bucket.
pub mod storage;
