-- An ADT message as the EHR's JSON: the patient's id and name.
local json = junction.json

function process(msg)
  local h, why = junction.hl7.parse(msg.payload)
  if not h then error(why, 0) end
  msg.payload = json.encode({
    event = h:get("MSH-9.2"),
    patient = {id = h:get("PID-3.1"), family = h:get("PID-5.1"), given = h:get("PID-5.2")},
  })
  return msg
end
