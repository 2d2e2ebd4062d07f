"""Thin gRPC servicers: convert, call the application service, convert back."""
