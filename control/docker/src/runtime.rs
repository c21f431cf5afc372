//! Tasks as Docker containers (to be written).
