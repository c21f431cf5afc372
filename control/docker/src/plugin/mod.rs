//! The libnetwork remote driver protocol (to be written).
