"""The segmenter's pure core: account features, RFM, segment programs, and the
tenant fold in stream time. No I/O, no clock: time arrives with the events."""
