//! Test kit (feature `testing`): an in-memory log store, an in-memory key-value state machine
//! and an in-memory network with fault injection.
