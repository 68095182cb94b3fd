# The ExecuTorch backend: <build>/executorch/bin/edgekit_runner.
#
#  - Host (EXECUTORCH_WHEEL_PREFIX): the prebuilt shared libraries of the executorch pip wheel, found
#    through the wheel's CMake package. Below CMake 3.28 that package sets EXECUTORCH_INCLUDE_DIRS,
#    EXECUTORCH_COMPILE_DEFINITIONS (with ET_USE_THREADPOOL) and EXECUTORCH_RUNTIME_LIBRARY_DIR instead
#    of imported targets; both are applied here.
#  - Source (EXECUTORCH_SRC, Android): ExecuTorch built in the same configure with XNNPACK, the module /
#    data-loader / tensor / threadpool extensions and the optimized and quantized kernels, linked
#    statically (the in-tree targets, as ExecuTorch's "Using ExecuTorch with C++" guide integrates it).
edgekit_add_runner(edgekit_runner_executorch executorch
                   src/backend_executorch.cpp src/llm_kernels.cpp src/pte_contents.cpp)
set(_t edgekit_runner_executorch)
# The attention kernel's inner loops want the vectorizer.
set_source_files_properties(src/llm_kernels.cpp PROPERTIES COMPILE_OPTIONS "-O3")

if(EXECUTORCH_SRC)
  foreach(_opt IN ITEMS EXECUTORCH_BUILD_XNNPACK EXECUTORCH_BUILD_EXTENSION_MODULE
                        EXECUTORCH_BUILD_EXTENSION_DATA_LOADER EXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR
                        EXECUTORCH_BUILD_EXTENSION_NAMED_DATA_MAP EXECUTORCH_BUILD_EXTENSION_TENSOR
                        EXECUTORCH_BUILD_KERNELS_OPTIMIZED EXECUTORCH_BUILD_KERNELS_QUANTIZED
                        EXECUTORCH_BUILD_CPUINFO EXECUTORCH_BUILD_PTHREADPOOL)
    set(${_opt} ON CACHE BOOL "" FORCE)
  endforeach()
  set(EXECUTORCH_ENABLE_LOGGING ON CACHE BOOL "" FORCE)
  add_subdirectory("${EXECUTORCH_SRC}" executorch EXCLUDE_FROM_ALL)
  set(_et_version "source")
  if(EXISTS "${EXECUTORCH_SRC}/version.txt")
    file(READ "${EXECUTORCH_SRC}/version.txt" _et_version)
    string(STRIP "${_et_version}" _et_version)
  endif()
  target_compile_definitions(${_t} PRIVATE EDGEKIT_EXECUTORCH_VERSION="${_et_version}" ET_USE_THREADPOOL)
  # Registration-only libraries (kernels, the delegate) must be linked whole or their static
  # registrations are dropped; ExecuTorch's helper does that per toolchain. The LLM custom ops come
  # from src/llm_kernels.cpp (ExecuTorch's own, if a build adds them, take precedence).
  foreach(_lib IN ITEMS optimized_native_cpu_ops_lib quantized_ops_lib xnnpack_backend)
    if(TARGET ${_lib})
      executorch_target_link_options_shared_lib(${_lib})
      target_link_libraries(${_t} PRIVATE ${_lib})
    endif()
  endforeach()
  target_link_libraries(${_t} PRIVATE executorch extension_module_static extension_data_loader
                                      extension_tensor extension_threadpool)
  if(ANDROID)
    target_link_libraries(${_t} PRIVATE log)
  endif()
else()
  find_package(executorch CONFIG REQUIRED PATHS "${EXECUTORCH_WHEEL_PREFIX}" NO_DEFAULT_PATH)
  if(NOT EXECUTORCH_RUNTIME_LIBRARY_DIR)
    message(FATAL_ERROR "the executorch package at ${EXECUTORCH_WHEEL_PREFIX} has no prebuilt runtime library")
  endif()
  target_include_directories(${_t} SYSTEM PRIVATE ${EXECUTORCH_INCLUDE_DIRS})
  target_compile_definitions(${_t} PRIVATE ${EXECUTORCH_COMPILE_DEFINITIONS}
                                           EDGEKIT_EXECUTORCH_VERSION="${EXECUTORCH_BUILD_VERSION}")
  # Exactly the components this runner needs, in dependency order. The wheel's aggregate list also
  # carries delegates we never use (OpenVINO ...), each of which would have to be pushed to a device.
  # libexecutorch_kernels_quantized holds the 8da4w ops and quantized_decomposed::embedding_{4bit,byte}.
  foreach(_name IN ITEMS executorch executorch_threadpool executorch_kernels_optimized
                         executorch_kernels_quantized executorch_backend_xnnpack)
    set(_path "${EXECUTORCH_RUNTIME_LIBRARY_DIR}/lib${_name}.so")
    if(NOT EXISTS "${_path}")
      message(FATAL_ERROR "the executorch wheel lacks lib${_name}.so (looked in ${EXECUTORCH_RUNTIME_LIBRARY_DIR})")
    endif()
    edgekit_bundle_library(${_t} executorch "${_path}" "lib${_name}.so")
  endforeach()
  edgekit_relocatable(${_t})
endif()
