# The ONNX Runtime GenAI backend: <build>/onnxruntime-genai/bin/edgekit_runner.
#
# GenAI ships no C header in its wheel or its Android package; src/backend_genai.cpp declares the
# few Oga* functions it calls (a C API, stable across the releases edgekit uses). GenAI loads ONNX
# Runtime itself, by name (ORT_LIBRARY_SONAME: libonnxruntime.so.1 on Linux); the runner links that
# library too (copied under that name), so the dynamic loader resolves it from lib/ before main and a
# missing copy is named by the loader instead of aborting inside GenAI.
edgekit_add_runner(edgekit_runner_genai onnxruntime-genai src/backend_genai.cpp)
set(_t edgekit_runner_genai)
foreach(_lib IN ITEMS ORT_GENAI_LIBRARY ORT_LIBRARY)
  if(NOT EXISTS "${${_lib}}")
    message(FATAL_ERROR "${_lib}='${${_lib}}' does not exist")
  endif()
endforeach()
target_compile_definitions(${_t} PRIVATE EDGEKIT_GENAI_VERSION="${ORT_GENAI_VERSION}")
edgekit_bundle_library(${_t} onnxruntime-genai "${ORT_LIBRARY}" "${ORT_LIBRARY_SONAME}")
edgekit_bundle_library(${_t} onnxruntime-genai "${ORT_GENAI_LIBRARY}" "libonnxruntime-genai.so")
target_link_libraries(${_t} PRIVATE ${CMAKE_DL_LIBS})
if(ANDROID)
  target_link_libraries(${_t} PRIVATE log)
endif()
edgekit_relocatable(${_t})
