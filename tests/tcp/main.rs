//! Tests of the `tcp` transport.
