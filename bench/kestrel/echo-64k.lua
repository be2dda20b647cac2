-- wrk script for bench/kestrel/wrk-rounds.sh: POST a 64 KiB body to /echo (wrk adds the Content-Length header).
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 4096) -- 65536 bytes
wrk.headers["Content-Type"] = "application/octet-stream"
