-- wrk script: POST one Magnews webhook event with a unique id per request.
local counter = 0
local made = 0

setup = function(thread)
  made = made + 1
  thread:set("tid", made)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local padding = string.rep("x", 800)  -- about 1 KB bodies, as a real contact event
local run = ""  -- wrk ... -- <prefix>: several wrk processes at once send distinct ids

init = function(args)
  run = args[1] or ""
end

request = function()
  counter = counter + 1
  local body = '{"id":"bench-' .. run .. os.time() .. '-' .. tid .. '-' .. counter .. '","topic":"communications/msg/open",' ..
    '"timestamp":"2025-11-14T13:00:00Z","data":{"idcontact":' .. counter .. ',"iddatabase":7,' ..
    '"email":"u' .. counter .. '@example.com","note":"' .. padding .. '"}}'
  return wrk.format(nil, "/webhooks/magnews", nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
