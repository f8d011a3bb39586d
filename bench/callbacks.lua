-- wrk script for bench/callbacks.py: POSTs pre-signed, distinct callback bodies.
--
-- Arguments (after `--`): <bodies file> <first line> <last line, exclusive> <threads> <path>
-- Each line of the bodies file is "<hex signature>\t<JSON body>". Thread n (0-based) sends lines
-- first+n, first+n+threads, ... so no two threads ever send the same body. A thread that runs out
-- starts over (counted in `wrapped`; the driver treats any wrap on the real endpoint as a failure,
-- since a repeated body is a duplicate that adds no row).
--
-- `done` prints one line "BENCH_RESULT <json>" that the driver parses: wrk's own summary, latency
-- percentiles in microseconds, and per-thread counters (`sent` = requests written).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local requests = {}
local count = 0
local index = 0
sent = 0
wrapped = 0

function init(args)
  local path, first, last, nthreads, url_path = args[1], tonumber(args[2]), tonumber(args[3]),
    tonumber(args[4]), args[5]
  local file = assert(io.open(path, "rb"))
  local line_no = 0
  for line in file:lines() do
    if line_no >= last then
      break
    end
    if line_no >= first and (line_no - first) % nthreads == thread_id then
      local tab = line:find("\t", 1, true)
      local signature = line:sub(1, tab - 1)
      local body = line:sub(tab + 1)
      count = count + 1
      requests[count] = wrk.format("POST", url_path, {
        ["Content-Type"] = "application/json",
        ["X-Sinch-Signature"] = signature,
      }, body)
    end
    line_no = line_no + 1
  end
  file:close()
  assert(count > 0, "no bodies for thread " .. thread_id)
end

function request()
  index = index + 1
  if index > count then
    index = 1
    wrapped = wrapped + 1
  end
  sent = sent + 1
  return requests[index]
end

function done(summary, latency, _requests)
  local per_thread = {}
  for _, thread in ipairs(threads) do
    table.insert(per_thread, string.format(
      '{"id":%d,"sent":%d,"wrapped":%d}',
      thread:get("thread_id"), thread:get("sent"), thread:get("wrapped")))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d},"threads":[%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    table.concat(per_thread, ",")))
end
