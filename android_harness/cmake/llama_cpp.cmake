# The llama.cpp backend: <build>/llama.cpp/bin/edgekit_runner.
#
#  - Host (LLAMA_CPP_DIR): a shared-library build laid out as include/ and lib/ (what
#    scripts/build_llama_cpp.sh produces); libllama and the ggml libraries are copied into lib/ under
#    their sonames.
#  - Source (LLAMA_CPP_SRC, Android): llama.cpp built in the same configure, static, CPU only, without
#    its tools, for the toolchain's ABI (no -march=native: GGML_NATIVE off).
edgekit_add_runner(edgekit_runner_llama llama.cpp src/backend_llama.cpp)
set(_t edgekit_runner_llama)
target_compile_definitions(${_t} PRIVATE EDGEKIT_LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION}")
if(LLAMA_CPP_SRC)
  set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
  foreach(_opt IN ITEMS GGML_NATIVE LLAMA_CURL LLAMA_BUILD_TESTS LLAMA_BUILD_EXAMPLES LLAMA_BUILD_SERVER
                        LLAMA_BUILD_TOOLS LLAMA_BUILD_COMMON GGML_OPENMP)
    set(${_opt} OFF CACHE BOOL "" FORCE)
  endforeach()
  add_subdirectory("${LLAMA_CPP_SRC}" llama.cpp-src EXCLUDE_FROM_ALL)
  target_link_libraries(${_t} PRIVATE llama)
  target_include_directories(${_t} PRIVATE "${LLAMA_CPP_SRC}/src")  # llama-ext.h (memory breakdown)
  if(ANDROID)
    target_link_libraries(${_t} PRIVATE log)
  endif()
else()
  if(NOT EXISTS "${LLAMA_CPP_DIR}/include/llama.h")
    message(FATAL_ERROR "LLAMA_CPP_DIR='${LLAMA_CPP_DIR}' has no include/llama.h")
  endif()
  target_include_directories(${_t} SYSTEM PRIVATE "${LLAMA_CPP_DIR}/include")
  if(EXISTS "${LLAMA_CPP_DIR}/src/src/llama-ext.h")  # the build's source tree: the memory breakdown API
    target_include_directories(${_t} SYSTEM PRIVATE "${LLAMA_CPP_DIR}/src/src")
  endif()
  # libllama needs libggml, which needs libggml-base and the CPU backend; all under their sonames.
  foreach(_name IN ITEMS libggml-base.so.0 libggml-cpu.so.0 libggml.so.0 libllama.so.0)
    if(NOT EXISTS "${LLAMA_CPP_DIR}/lib/${_name}")
      message(FATAL_ERROR "LLAMA_CPP_DIR='${LLAMA_CPP_DIR}' has no lib/${_name}")
    endif()
    file(REAL_PATH "${LLAMA_CPP_DIR}/lib/${_name}" _real)
    edgekit_bundle_library(${_t} llama.cpp "${_real}" "${_name}")
  endforeach()
  edgekit_relocatable(${_t})
endif()
