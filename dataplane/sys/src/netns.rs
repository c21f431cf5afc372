//! TODO(owner): module being written.
