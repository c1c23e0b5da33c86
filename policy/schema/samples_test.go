package schema

// Request bodies that must pass. Unless marked otherwise they are copied
// from the API's own documentation:
//   - OpenAI: the request examples of the API reference (x-oaiMeta examples
//     in openai/openai-openapi openapi.yaml) and the Structured Outputs,
//     function calling, vision, audio and PDF file guides.
//   - Open Inference Protocol: kserve/open-inference-protocol
//     inference_rest.md; Triton's "simple" model (INPUT0/INPUT1, INT32
//     [1,16]) as used in the Triton and Seldon docs; KServe's sklearn iris
//     v2 example; KServe's Hugging Face v2 example for BYTES.
//   - TensorFlow Serving: tensorflow_serving/g3doc/api_rest.md.
var validSamples = []struct {
	id, name, body string
}{
	// OpenAI chat completions.
	{OpenAIChat, "reference: default", `{
    "model": "VAR_chat_model_id",
    "messages": [
      {"role": "developer", "content": "You are a helpful assistant."},
      {"role": "user", "content": "Hello!"}
    ]
  }`},
	{OpenAIChat, "reference: image input", `{
    "model": "gpt-5.4",
    "messages": [
      {
        "role": "user",
        "content": [
          {"type": "text", "text": "What is in this image?"},
          {
            "type": "image_url",
            "image_url": {
              "url": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
            }
          }
        ]
      }
    ],
    "max_tokens": 300
  }`},
	{OpenAIChat, "vision guide: image detail", `{
    "model": "gpt-4.1-mini",
    "messages": [{
      "role": "user",
      "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg==", "detail": "high"}}
      ]
    }]
  }`},
	{OpenAIChat, "reference: streaming", `{
    "model": "VAR_chat_model_id",
    "messages": [
      {"role": "developer", "content": "You are a helpful assistant."},
      {"role": "user", "content": "Hello!"}
    ],
    "stream": true
  }`},
	{OpenAIChat, "streaming guide: stream_options include_usage", `{
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say this is a test"}],
    "stream": true,
    "stream_options": {"include_usage": true}
  }`},
	{OpenAIChat, "reference: functions (tools + tool_choice)", `{
  "model": "gpt-5.4",
  "messages": [
    {"role": "user", "content": "What is the weather like in Boston today?"}
  ],
  "tools": [
    {
      "type": "function",
      "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
          "type": "object",
          "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
          },
          "required": ["location"]
        }
      }
    }
  ],
  "tool_choice": "auto"
}`},
	{OpenAIChat, "function calling guide: tool call round trip, named tool_choice", `{
  "model": "gpt-4.1",
  "messages": [
    {"role": "user", "content": "What's the weather like in Paris today?"},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_12345xyz", "type": "function", "function": {"name": "get_weather", "arguments": "{\"latitude\":48.8566,\"longitude\":2.3522}"}}
    ]},
    {"role": "tool", "tool_call_id": "call_12345xyz", "content": "14"}
  ],
  "tools": [{
    "type": "function",
    "function": {
      "name": "get_weather",
      "description": "Get current temperature for provided coordinates in celsius.",
      "parameters": {
        "type": "object",
        "properties": {"latitude": {"type": "number"}, "longitude": {"type": "number"}},
        "required": ["latitude", "longitude"],
        "additionalProperties": false
      },
      "strict": true
    }
  }],
  "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
  "parallel_tool_calls": false
}`},
	{OpenAIChat, "reference: logprobs", `{
    "model": "VAR_chat_model_id",
    "messages": [{"role": "user", "content": "Hello!"}],
    "logprobs": true,
    "top_logprobs": 2
  }`},
	{OpenAIChat, "structured outputs guide: response_format json_schema", `{
  "model": "gpt-4o-2024-08-06",
  "messages": [
    {"role": "system", "content": "You are a helpful math tutor. Guide the user through the solution step by step."},
    {"role": "user", "content": "how can I solve 8x + 7 = -23"}
  ],
  "response_format": {
    "type": "json_schema",
    "json_schema": {
      "name": "math_reasoning",
      "schema": {
        "type": "object",
        "properties": {
          "steps": {
            "type": "array",
            "items": {
              "type": "object",
              "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
              "required": ["explanation", "output"],
              "additionalProperties": false
            }
          },
          "final_answer": {"type": "string"}
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": false
      },
      "strict": true
    }
  }
}`},
	{OpenAIChat, "JSON mode: response_format json_object, seed", `{
  "model": "gpt-4o-mini",
  "response_format": {"type": "json_object"},
  "seed": 42,
  "messages": [
    {"role": "system", "content": "You are a helpful assistant designed to output JSON."},
    {"role": "user", "content": "Who won the world series in 2020?"}
  ]
}`},
	{OpenAIChat, "audio guide: input_audio part, audio output", `{
  "model": "gpt-4o-audio-preview",
  "modalities": ["text", "audio"],
  "audio": {"voice": "alloy", "format": "wav"},
  "messages": [{
    "role": "user",
    "content": [
      {"type": "text", "text": "What is in this recording?"},
      {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA", "format": "wav"}}
    ]
  }]
}`},
	{OpenAIChat, "PDF files guide: file part", `{
  "model": "gpt-5",
  "messages": [{
    "role": "user",
    "content": [
      {"type": "file", "file": {"filename": "draconomicon.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}},
      {"type": "text", "text": "What is the first dragon in the book?"}
    ]
  }]
}`},
	{OpenAIChat, "reasoning: reasoning_effort, max_completion_tokens, developer parts", `{
  "model": "o3",
  "reasoning_effort": "high",
  "max_completion_tokens": 25000,
  "messages": [
    {"role": "developer", "content": [{"type": "text", "text": "Formatting re-enabled"}]},
    {"role": "user", "content": "Write a bash script that takes a matrix represented as a string with format '[1,2],[3,4],[5,6]' and prints the transpose in the same format."}
  ]
}`},
	{OpenAIChat, "predicted outputs guide: prediction", `{
  "model": "gpt-4.1",
  "messages": [
    {"role": "user", "content": "Replace the username property with an email property. Respond only with code."},
    {"role": "user", "content": "class User {\n  firstName: string = \"\";\n  username: string = \"\";\n}"}
  ],
  "prediction": {"type": "content", "content": "class User {\n  firstName: string = \"\";\n  username: string = \"\";\n}"}
}`},
	{OpenAIChat, "all sampling options set, nulls where the spec allows them", `{
  "model": "gpt-4o",
  "messages": [{"role": "user", "content": "Hi", "name": "alice"}],
  "temperature": 0.7, "top_p": null, "n": 2, "stop": ["\n", "END"],
  "presence_penalty": -2, "frequency_penalty": 2, "logit_bias": {"50256": -100},
  "user": "user-1234", "metadata": {"team": "search"}, "store": true,
  "service_tier": "auto", "max_tokens": null
}`},
	{OpenAIChat, "assistant refusal part, deprecated function role", `{
  "model": "gpt-4o",
  "messages": [
    {"role": "user", "content": "Tell me a secret."},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
    {"role": "function", "name": "lookup", "content": null}
  ]
}`},
	{OpenAIChat, "OpenAI-compatible extensions (vLLM top_k, guided_json) are allowed (not from a doc)", `{
  "model": "meta-llama/Llama-3.1-8B-Instruct",
  "messages": [{"role": "user", "content": "Classify: great movie"}],
  "top_k": 20, "repetition_penalty": 1.05,
  "guided_json": {"type": "object", "properties": {"label": {"type": "string"}}}
}`},

	// OpenAI completions.
	{OpenAICompletions, "reference: no streaming", `{
    "model": "VAR_completion_model_id",
    "prompt": "Say this is a test",
    "max_tokens": 7,
    "temperature": 0
  }`},
	{OpenAICompletions, "reference: streaming", `{
    "model": "VAR_completion_model_id",
    "prompt": "Say this is a test",
    "max_tokens": 7,
    "temperature": 0,
    "stream": true
  }`},
	{OpenAICompletions, "prompt as array of strings, with suffix and echo", `{
    "model": "gpt-3.5-turbo-instruct",
    "prompt": ["Say this is a test", "Say this is another test"],
    "suffix": null, "echo": true, "best_of": 2, "n": 1, "logprobs": 5, "stop": "\n"
  }`},
	{OpenAICompletions, "prompt as token ids", `{"model": "davinci-002", "prompt": [1212, 318, 257, 1332, 13]}`},
	{OpenAICompletions, "prompt as arrays of token ids", `{"model": "davinci-002", "prompt": [[1212, 318], [257, 1332, 13]]}`},

	// OpenAI embeddings.
	{OpenAIEmbeddings, "reference: string input", `{
    "input": "The food was delicious and the waiter...",
    "model": "text-embedding-ada-002",
    "encoding_format": "float"
  }`},
	{OpenAIEmbeddings, "embeddings guide: array of strings, dimensions", `{
    "input": ["Your text string goes here", "And another one"],
    "model": "text-embedding-3-small",
    "dimensions": 256,
    "encoding_format": "base64",
    "user": "user-1234"
  }`},
	{OpenAIEmbeddings, "token ids and arrays of token ids", `{"model": "text-embedding-3-large", "input": [[8134, 374], [1115, 13]]}`},

	// Open Inference Protocol.
	{OIPInfer, "OIP spec example, input0 (input1 of that example is inconsistent, see invalid samples)", `{
      "id" : "42",
      "inputs" : [
        {
          "name" : "input0",
          "shape" : [ 2, 2 ],
          "datatype" : "UINT32",
          "data" : [ 1, 2, 3, 4 ]
        }
      ],
      "outputs" : [
        {
          "name" : "output0"
        }
      ]
    }`},
	{OIPInfer, "Triton simple model: INPUT0/INPUT1 INT32 [1,16]", `{"inputs":[
      {"name":"INPUT0","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"datatype":"INT32","shape":[1,16]},
      {"name":"INPUT1","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"datatype":"INT32","shape":[1,16]}]}`},
	{OIPInfer, "KServe sklearn iris v2: nested FP32 data", `{
  "inputs": [
    {
      "name": "input-0",
      "shape": [2, 4],
      "datatype": "FP32",
      "data": [
        [6.8, 2.8, 4.8, 1.4],
        [6.0, 3.4, 4.5, 1.6]
      ]
    }
  ]
}`},
	{OIPInfer, "KServe Hugging Face v2: BYTES", `{
  "inputs": [
    {
      "name": "input-0",
      "shape": [2],
      "datatype": "BYTES",
      "data": ["Hello, my dog is cute", "I am feeling sad"]
    }
  ]
}`},
	{OIPInfer, "parameters, scalar shape, BOOL, bounds of INT8/UINT64/FP16, empty tensor", `{
  "id": "req-1",
  "parameters": {"content_type": "np", "priority": 1, "binary_data_output": false},
  "inputs": [
    {"name": "s", "shape": [], "datatype": "INT64", "data": [-9223372036854775808], "parameters": {"content_type": "np"}},
    {"name": "b", "shape": [3], "datatype": "BOOL", "data": [true, false, true]},
    {"name": "i8", "shape": [2], "datatype": "INT8", "data": [-128, 127]},
    {"name": "u64", "shape": [1], "datatype": "UINT64", "data": [18446744073709551615]},
    {"name": "h", "shape": [2], "datatype": "FP16", "data": [65504, -0.5e-3]},
    {"name": "e", "shape": [0, 4], "datatype": "FP64", "data": []}
  ],
  "outputs": [{"name": "out", "parameters": {"binary_data": false}}]
}`},

	// KServe v1 / TensorFlow Serving predict.
	{KServeV1Predict, "TF Serving: list of 3 scalar tensors", `{
  "instances": [ "foo", "bar", "baz" ]
}`},
	{KServeV1Predict, "TF Serving: list of 2 tensors each of [1, 2] shape", `{
  "instances": [ [[1, 2]], [[3, 4]] ]
}`},
	{KServeV1Predict, "TF Serving: row format, named inputs (the doc's stray ']' after signal removed)", `{
 "instances": [
   {
     "tag": "foo",
     "signal": [1, 2, 3, 4, 5],
     "sensor": [[1, 2], [3, 4]]
   },
   {
     "tag": "bar",
     "signal": [3, 4, 1, 2, 5],
     "sensor": [[4, 5], [6, 8]]
   }
 ]
}`},
	{KServeV1Predict, "TF Serving: columnar format", `{
 "inputs": {
   "tag": ["foo", "bar"],
   "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
   "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]
 }
}`},
	{KServeV1Predict, "TF Serving: half_plus_three", `{"instances": [1.0,2.0,5.0]}`},
	{KServeV1Predict, "TF Serving: signature_name, binary b64", `{
  "signature_name": "classify_objects",
  "instances": [
    {"image": { "b64": "aW1hZ2UgYnl0ZXM=" }, "caption": "seaside"},
    {"image": { "b64": "YXdlc29tZSBpbWFnZSBieXRlcw==" }, "caption": "mountains"}
  ]
}`},
	{KServeV1Predict, "KServe sklearn iris v1", `{
  "instances": [
    [6.8,  2.8,  4.8,  1.4],
    [6.0,  3.4,  4.5,  1.6]
  ]
}`},
	{KServeV1Predict, "columnar single tensor", `{"inputs": [[1.0, 2.0], [3.0, 4.0]]}`},
}

// Bodies that must fail, with the violation they must give.
var invalidSamples = []struct {
	id, name, body string
	pointer, rule  string
}{
	// OpenAI chat completions.
	{OpenAIChat, "missing model", `{"messages": [{"role": "user", "content": "Hello!"}]}`,
		"", "required: model"},
	{OpenAIChat, "missing model and messages", `{"temperature": 1}`,
		"", "required: model, messages"},
	{OpenAIChat, "body is an array", `[{"role": "user", "content": "Hello!"}]`,
		"", "type: want object"},
	{OpenAIChat, "model not a string", `{"model": 4, "messages": [{"role": "user", "content": "Hi"}]}`,
		"/model", "type: want string"},
	{OpenAIChat, "messages not an array", `{"model": "gpt-4o", "messages": {"role": "user", "content": "Hi"}}`,
		"/messages", "type: want array"},
	{OpenAIChat, "messages empty", `{"model": "gpt-4o", "messages": []}`,
		"/messages", "minItems: want >= 1"},
	{OpenAIChat, "unknown role", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}, {"role": "admin", "content": "Hi"}]}`,
		"/messages/1/role", "enum"},
	{OpenAIChat, "message without role", `{"model": "gpt-4o", "messages": [{"content": "Hi"}]}`,
		"/messages/0", "required: role"},
	{OpenAIChat, "user message without content", `{"model": "gpt-4o", "messages": [{"role": "user"}]}`,
		"/messages/0", "required: content"},
	{OpenAIChat, "content is a number", `{"model": "gpt-4o", "messages": [{"role": "user", "content": 42}]}`,
		"/messages/0/content", "type: want string or array"},
	{OpenAIChat, "bad content part type", `{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}]}]}`,
		"/messages/0/content/1/type", "enum"},
	{OpenAIChat, "image part without url", `{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}]}`,
		"/messages/0/content/0/image_url", "required: url"},
	{OpenAIChat, "image detail unknown", `{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "ultra"}}]}]}`,
		"/messages/0/content/0/image_url/detail", "enum"},
	{OpenAIChat, "text part without text", `{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text"}]}]}`,
		"/messages/0/content/0", "required: text"},
	{OpenAIChat, "image part in a system message", `{"model": "gpt-4o", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}`,
		"/messages/0/content/0/type", "enum"},
	{OpenAIChat, "empty content parts", `{"model": "gpt-4o", "messages": [{"role": "user", "content": []}]}`,
		"/messages/0/content", "minItems: want >= 1"},
	{OpenAIChat, "tool message without tool_call_id", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "content": "14"}]}`,
		"/messages/1", "required: tool_call_id"},
	{OpenAIChat, "assistant tool call without id", `{"model": "gpt-4o", "messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}`,
		"/messages/0/tool_calls/0", "required: id"},
	{OpenAIChat, "temperature 3", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "temperature": 3}`,
		"/temperature", "maximum: want <= 2"},
	{OpenAIChat, "temperature as string", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}`,
		"/temperature", "type: want null or number"},
	{OpenAIChat, "top_p above 1", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "top_p": 1.5}`,
		"/top_p", "maximum: want <= 1"},
	{OpenAIChat, "presence_penalty below -2", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "presence_penalty": -2.5}`,
		"/presence_penalty", "minimum: want >= -2"},
	{OpenAIChat, "max_tokens not an integer", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1.5}`,
		"/max_tokens", "type: want null or integer"},
	{OpenAIChat, "n zero", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "n": 0}`,
		"/n", "minimum: want >= 1"},
	{OpenAIChat, "five stop sequences", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stop": ["a", "b", "c", "d", "e"]}`,
		"/stop", "maxItems: want <= 4"},
	{OpenAIChat, "logit_bias out of range", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"50256": 101}}`,
		"/logit_bias/*", "maximum: want <= 100"},
	{OpenAIChat, "top_logprobs above 20", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 21}`,
		"/top_logprobs", "maximum: want <= 20"},
	{OpenAIChat, "stream not boolean", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": "yes"}`,
		"/stream", "type: want null or boolean"},
	{OpenAIChat, "tool without function name", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function", "function": {"description": "no name", "parameters": {"type": "object"}}}]}`,
		"/tools/0/function", "required: name"},
	{OpenAIChat, "function tool without function", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function"}]}`,
		"/tools/0", "required: function"},
	{OpenAIChat, "tool of unknown type", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "retrieval"}]}`,
		"/tools/0/type", "enum"},
	{OpenAIChat, "tool parameters not an object", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]}`,
		"/tools/0/function/parameters", "type: want object"},
	{OpenAIChat, "tool_choice unknown string", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "tool_choice": "always"}`,
		"/tool_choice", "enum"},
	{OpenAIChat, "tool_choice function without name", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "tool_choice": {"type": "function", "function": {}}}`,
		"/tool_choice/function", "required: name"},
	{OpenAIChat, "response_format json_schema without json_schema", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_schema"}}`,
		"/response_format", "required: json_schema"},
	{OpenAIChat, "response_format json_schema without name", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}`,
		"/response_format/json_schema", "required: name"},
	{OpenAIChat, "response_format unknown type", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "yaml"}}`,
		"/response_format/type", "enum"},
	{OpenAIChat, "stream_options not an object", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": true, "stream_options": true}`,
		"/stream_options", "type: want null or object"},
	{OpenAIChat, "reasoning_effort unknown", `{"model": "o3", "messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "extreme"}`,
		"/reasoning_effort", "enum"},
	{OpenAIChat, "metadata value not a string", `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "metadata": {"n": 1}}`,
		"/metadata/n", "type: want string"},

	// OpenAI completions.
	{OpenAICompletions, "missing prompt", `{"model": "gpt-3.5-turbo-instruct"}`,
		"", "required: prompt"},
	{OpenAICompletions, "prompt is a number", `{"model": "gpt-3.5-turbo-instruct", "prompt": 5}`,
		"/prompt", "type: want null or string or array"},
	{OpenAICompletions, "prompt mixes strings and tokens", `{"model": "gpt-3.5-turbo-instruct", "prompt": ["a", 5]}`,
		"/prompt/0", "type: want integer or array"},
	{OpenAICompletions, "empty token array in prompt", `{"model": "davinci-002", "prompt": [[1, 2], []]}`,
		"/prompt/1", "minItems: want >= 1"},
	{OpenAICompletions, "logprobs above 5", `{"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "logprobs": 6}`,
		"/logprobs", "maximum: want <= 5"},
	{OpenAICompletions, "temperature 3", `{"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "temperature": 3}`,
		"/temperature", "maximum: want <= 2"},

	// OpenAI embeddings.
	{OpenAIEmbeddings, "missing input", `{"model": "text-embedding-3-small"}`,
		"", "required: input"},
	{OpenAIEmbeddings, "empty string input", `{"model": "text-embedding-3-small", "input": ""}`,
		"/input", "minLength: want >= 1"},
	{OpenAIEmbeddings, "empty array input", `{"model": "text-embedding-3-small", "input": []}`,
		"/input", "minItems: want >= 1"},
	{OpenAIEmbeddings, "empty string in array", `{"model": "text-embedding-3-small", "input": ["a", ""]}`,
		"/input/1", "minLength: want >= 1"},
	{OpenAIEmbeddings, "object input", `{"model": "text-embedding-3-small", "input": {"text": "a"}}`,
		"/input", "type: want string or array"},
	{OpenAIEmbeddings, "unknown encoding_format", `{"model": "text-embedding-3-small", "input": "a", "encoding_format": "hex"}`,
		"/encoding_format", "enum"},
	{OpenAIEmbeddings, "dimensions zero", `{"model": "text-embedding-3-small", "input": "a", "dimensions": 0}`,
		"/dimensions", "minimum: want >= 1"},

	// Open Inference Protocol.
	{OIPInfer, "OIP spec example as published: input1 has shape [3] and one element", `{
      "id" : "42",
      "inputs" : [
        {"name" : "input0", "shape" : [ 2, 2 ], "datatype" : "UINT32", "data" : [ 1, 2, 3, 4 ]},
        {"name" : "input1", "shape" : [ 3 ], "datatype" : "BOOL", "data" : [ true ]}
      ],
      "outputs" : [{"name" : "output0"}]
    }`,
		"/inputs/1/data", "tensor data length 1 != shape product 3"},
	{OIPInfer, "shape/data mismatch", `{"inputs": [{"name": "a", "shape": [1, 16], "datatype": "INT32", "data": [1, 2, 3, 4, 5]}]}`,
		"/inputs/0/data", "tensor data length 5 != shape product 16"},
	{OIPInfer, "too much data", `{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [[1, 2], [3]]}]}`,
		"/inputs/0/data/0", "tensor data nested deeper than shape"},
	{OIPInfer, "scalar with two elements", `{"inputs": [{"name": "a", "shape": [], "datatype": "FP32", "data": [1, 2]}]}`,
		"/inputs/0/data", "tensor data length 2 != shape product 1"},
	{OIPInfer, "unknown datatype", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP8", "data": [1]}]}`,
		"/inputs/0/datatype", "enum"},
	{OIPInfer, "string element in INT32", `{"inputs": [{"name": "a", "shape": [3], "datatype": "INT32", "data": [1, 2, "3"]}]}`,
		"/inputs/0/data/2", "tensor element: want integer in [-2147483648, 2147483647] for INT32"},
	{OIPInfer, "fraction in INT32", `{"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [1.5]}]}`,
		"/inputs/0/data/0", "tensor element: want integer in [-2147483648, 2147483647] for INT32"},
	{OIPInfer, "1.0 in INT64 (integers are written as integers)", `{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [1.0]}]}`,
		"/inputs/0/data/0", "tensor element: want integer in [-9223372036854775808, 9223372036854775807] for INT64"},
	{OIPInfer, "INT8 overflow", `{"inputs": [{"name": "a", "shape": [2, 2], "datatype": "INT8", "data": [[1, 2], [3, 128]]}]}`,
		"/inputs/0/data/1/1", "tensor element: want integer in [-128, 127] for INT8"},
	{OIPInfer, "INT8 underflow", `{"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [-129]}]}`,
		"/inputs/0/data/0", "tensor element: want integer in [-128, 127] for INT8"},
	{OIPInfer, "negative UINT8", `{"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [-1]}]}`,
		"/inputs/0/data/0", "tensor element: want integer in [0, 255] for UINT8"},
	{OIPInfer, "UINT64 overflow", `{"inputs": [{"name": "a", "shape": [1], "datatype": "UINT64", "data": [18446744073709551616]}]}`,
		"/inputs/0/data/0", "tensor element: want integer in [0, 18446744073709551615] for UINT64"},
	{OIPInfer, "FP16 out of range", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP16", "data": [70000]}]}`,
		"/inputs/0/data/0", "tensor element: want finite number in range for FP16"},
	{OIPInfer, "FP32 out of range", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1e39]}]}`,
		"/inputs/0/data/0", "tensor element: want finite number in range for FP32"},
	{OIPInfer, "number in BOOL", `{"inputs": [{"name": "a", "shape": [2], "datatype": "BOOL", "data": [true, 1]}]}`,
		"/inputs/0/data/1", "tensor element: want boolean for BOOL"},
	{OIPInfer, "number in BYTES", `{"inputs": [{"name": "a", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}]}`,
		"/inputs/0/data/1", "tensor element: want string for BYTES"},
	{OIPInfer, "null element", `{"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1, null]}]}`,
		"/inputs/0/data/1", "tensor element: want finite number in range for FP64"},
	{OIPInfer, "negative dimension (-1 is for metadata, not requests)", `{"inputs": [{"name": "a", "shape": [-1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}`,
		"/inputs/0/shape/0", "minimum: want >= 0"},
	{OIPInfer, "dimension written as 2.0", `{"inputs": [{"name": "a", "shape": [2.0], "datatype": "FP32", "data": [1, 2]}]}`,
		"/inputs/0/shape/0", "tensor dimension: want integer in [0, 18446744073709551615]"},
	{OIPInfer, "shape product overflows", `{"inputs": [{"name": "a", "shape": [4294967296, 4294967296], "datatype": "FP32", "data": [1]}]}`,
		"/inputs/0/shape", "tensor shape product overflows"},
	{OIPInfer, "huge shape product", `{"inputs": [{"name": "a", "shape": [4294967295, 4294967295], "datatype": "FP32", "data": [1]}]}`,
		"/inputs/0/data", "tensor data length 1 != shape product 18446744065119617025"},
	{OIPInfer, "missing data", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}`,
		"/inputs/0", "required: data"},
	{OIPInfer, "data not an array", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": 1}]}`,
		"/inputs/0/data", "type: want array"},
	{OIPInfer, "no inputs", `{"inputs": []}`,
		"/inputs", "minItems: want >= 1"},
	{OIPInfer, "parameter value is an object", `{"parameters": {"headers": {"a": "b"}}, "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}`,
		"/parameters/*", "type: want boolean or number or string"},
	{OIPInfer, "output without name", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{}]}`,
		"/outputs/0", "required: name"},
	{OIPInfer, "second input is wrong", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "b", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}`,
		"/inputs/1/data", "tensor data length 5 != shape product 6"},

	// KServe v1 / TensorFlow Serving predict.
	{KServeV1Predict, "both instances and inputs", `{"instances": [[1.0]], "inputs": {"x": [[1.0]]}}`,
		"", "exactly one of instances, inputs: got both"},
	{KServeV1Predict, "neither instances nor inputs", `{"signature_name": "serving_default"}`,
		"", "exactly one of instances, inputs: got neither"},
	{KServeV1Predict, "instances not a list", `{"instances": {"x": 1}}`,
		"/instances", "type: want array"},
	{KServeV1Predict, "inputs null", `{"inputs": null}`,
		"/inputs", "type: want boolean or number or string or array or object"},
	{KServeV1Predict, "signature_name not a string", `{"signature_name": 1, "instances": [1.0]}`,
		"/signature_name", "type: want string"},
}
