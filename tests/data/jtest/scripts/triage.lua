-- Lab orders: invalid JSON is dead-lettered, test orders are dropped (filtered), the rest
-- go on with a priority header; a batch {"orders": [...]} is split into one message each.
local json = junction.json

function process(msg)
  local order, why = json.decode(msg.payload)
  if not order then error("invalid JSON: " .. why, 0) end
  if order.test then return nil end
  if order.orders then
    local out = {}
    for _, o in ipairs(order.orders) do
      out[#out + 1] = {payload = json.encode(o), headers = {["X-Priority"] = "normal"}}
    end
    return out
  end
  msg.headers["X-Priority"] = order.urgent and "high" or "normal"
  order.seen = true
  msg.payload = json.encode(order)
  return msg
end
