# `cmake --install <build> --prefix <dir>`: the header, the libraries, a CMake
# package and pkg-config files, laid out as
#   include/windows_redirector.h
#   lib/libwindows_redirector.so, lib/libwindows_redirector.a          (Linux)
#   bin/windows_redirector.dll; lib/libwindows_redirector.dll.a (mingw import
#     library), lib/libwindows_redirector.a, lib/windows_redirector.lib (MSVC
#     import library), lib/windows_redirector.def                       (Windows)
#   lib/cmake/windows_redirector/  find_package(windows_redirector CONFIG)
#   lib/pkgconfig/windows_redirector.pc, windows_redirector-static.pc
# Nothing installed names the build tree or the prefix: the package and the
# .pc files find the prefix from where they are, so it can be moved.
set(WR_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/windows_redirector")
# The pkg-config modules the static library links (Linux; for the Config
# template and the .pc files).
list(JOIN WR_NFQ_MODULES " " WR_PC_NFQ_MODULES)

install(TARGETS wr_shared EXPORT windows_redirector_shared
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS wr_static EXPORT windows_redirector_static
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES include/windows_redirector.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(WIN32)
  install(FILES "${WR_DEF}" "${WR_MSVC_LIB}" DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

# The CMake package: one export set per library, so that a user of the shared
# library needs nothing the static one links (see the Config template).
install(EXPORT windows_redirector_shared NAMESPACE windows_redirector::
  FILE windows_redirectorTargets.cmake DESTINATION ${WR_CMAKE_DIR})
install(EXPORT windows_redirector_static NAMESPACE windows_redirector::
  FILE windows_redirectorStaticTargets.cmake DESTINATION ${WR_CMAKE_DIR})
include(CMakePackageConfigHelpers)
configure_package_config_file(cmake/windows_redirectorConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/windows_redirectorConfig.cmake"
  INSTALL_DESTINATION ${WR_CMAKE_DIR})
# The C ABI only grows: a request for version 0.y is met by any 0.x, x >= y.
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/windows_redirectorConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${CMAKE_CURRENT_BINARY_DIR}/windows_redirectorConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/windows_redirectorConfigVersion.cmake"
  DESTINATION ${WR_CMAKE_DIR})

# pkg-config: windows_redirector.pc links the shared library (its
# Requires.private and Libs.private are what `pkg-config --static` adds for a
# link that takes the static library, e.g. gcc -static); the -static variant
# names the archive itself, so an ordinary link takes it.
set(WR_PC_STATIC_LIBS "")
foreach(lib ${WR_STATIC_LIBS})
  if(lib MATCHES "^-")
    list(APPEND WR_PC_STATIC_LIBS "${lib}")
  else()
    list(APPEND WR_PC_STATIC_LIBS "-l${lib}")
  endif()
endforeach()
list(JOIN WR_PC_STATIC_LIBS " " WR_PC_STATIC_LIBS)
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(WR_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH WR_PC_UP "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" WR_PC_UP "${WR_PC_UP}")
  set(WR_PC_PREFIX "\${pcfiledir}/${WR_PC_UP}")
endif()
set(WR_PC_ARCHIVE "${CMAKE_STATIC_LIBRARY_PREFIX}windows_redirector${CMAKE_STATIC_LIBRARY_SUFFIX}")

function(wr_pkg_config file name requires requires_private libs libs_private)
  string(STRIP "${libs}" libs)
  configure_file(cmake/windows_redirector.pc.in "${CMAKE_CURRENT_BINARY_DIR}/${file}.pc" @ONLY)
  install(FILES "${CMAKE_CURRENT_BINARY_DIR}/${file}.pc" DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
wr_pkg_config(windows_redirector "windows_redirector"
  "" "${WR_PC_NFQ_MODULES}" "-lwindows_redirector" "${WR_PC_STATIC_LIBS}")
wr_pkg_config(windows_redirector-static "windows_redirector (static library)"
  "${WR_PC_NFQ_MODULES}" "" "-l:${WR_PC_ARCHIVE} ${WR_PC_STATIC_LIBS}" "")
