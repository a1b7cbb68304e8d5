-- Appended to every wrk script bench/http_bench.py runs: wrk's --latency table
-- stops at p99, so the tail beyond it is printed here (microseconds).
done = function(summary, latency, requests)
    io.write(string.format("tail-latency-us p99.9 %d p99.99 %d max %d\n",
        latency:percentile(99.9), latency:percentile(99.99), latency.max))
end
