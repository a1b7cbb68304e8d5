-- wrk script: every request asks the server to close the connection after
-- answering, so each request pays for a new TCP connection (accept, protocol
-- setup, teardown) as short-lived clients without pooling do.
wrk.headers["Connection"] = "close"
