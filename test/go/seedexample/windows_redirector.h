#ifndef WINDOWS_REDIRECTOR_H
#define WINDOWS_REDIRECTOR_H

#include <stdint.h>

// Core redirector functions
int32_t start_redirector(void);
int32_t stop_redirector(void);
int32_t set_redirector_config(const char* json);
int32_t get_redirector_status(void);

// Configuration functions
void initialize_global_config(void);
void update_app_port(uint16_t port);

#endif // WINDOWS_REDIRECTOR_H
