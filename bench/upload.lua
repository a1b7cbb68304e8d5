-- wrk script: POST a 64 KiB body to /upload on every request.
-- wrk adds the Content-Length header for wrk.body itself.
wrk.method = "POST"
wrk.path = "/upload"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
